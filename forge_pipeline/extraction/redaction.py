"""Personal data and secrets -> typed placeholders such as ``[EMAIL]``.

Order matters: URLs carrying tokens go first (their query would otherwise look like a key), then keys,
emails, card numbers (Luhn-checked, so order numbers survive) and phone numbers last (the loosest).
The same patterns back the curated-set check that no personal data is left.
"""
from __future__ import annotations

import re
from collections import Counter

URL_TOKEN_RE = re.compile(
    r"(?i)(?P<prefix>https?://[^\s)\]>]*?[?&#](?:access_token|token|api[_-]?key|key|secret|sig|signature|"
    r"auth|password|pwd|session|code)=)(?P<value>(?!\[[A-Z_]+\])[^&\s)\]>#]+)")
URL_USERINFO_RE = re.compile(r"(?i)(?P<prefix>https?://)(?P<value>(?!\[[A-Z_]+\])[^/\s:@]+:[^/\s@]+)(?=@)")
API_KEY_RE = re.compile(
    r"\b(?:sk|pk|rk)[-_](?:live|test|proj|ant)?[-_]?[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{5,}"
    r"|\b(?=[A-Za-z0-9_-]{32,}\b)(?=[A-Za-z_-]*[0-9])(?=[0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b")
EMAIL_RE = re.compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
CARD_RE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
PHONE_RE = re.compile(r"(?<![\w/])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w/])")


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if not 9 <= len(digits) <= 15:
        return False
    # ISO dates and times ("2026-03-14", "10.30") are not phone numbers
    return not re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", candidate.strip())


def redact(text: str) -> tuple[str, Counter]:
    """Return the redacted text and how many of each kind were replaced."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, label: str, text: str, keep_prefix: bool = False, accept=None) -> str:
        def repl(m: re.Match) -> str:
            if accept is not None and not accept(m.group(0)):
                return m.group(0)
            counts[label] += 1
            return (m.group("prefix") if keep_prefix else "") + f"[{label}]"
        return pattern.sub(repl, text)

    text = sub(URL_TOKEN_RE, "TOKEN", text, keep_prefix=True)
    text = sub(URL_USERINFO_RE, "CREDENTIALS", text, keep_prefix=True)
    text = sub(API_KEY_RE, "API_KEY", text)
    text = sub(EMAIL_RE, "EMAIL", text)
    text = sub(CARD_RE, "CARD", text, accept=lambda s: _luhn_ok(re.sub(r"\D", "", s)))
    text = sub(PHONE_RE, "PHONE", text, accept=_is_phone)
    return text, counts


def find_personal_data(text: str) -> list[str]:
    """Labels of the personal-data patterns still present in ``text`` (empty when clean)."""
    _, counts = redact(text)
    return sorted(counts)
