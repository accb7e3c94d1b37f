"""An independent personal-data check for the training set: what the redactor missed blocks training.

It shares nothing with the redactor (forge_pipeline/extraction/redaction.py) but the fact that both read
text: no pattern, no placeholder logic, no Presidio. It is stricter where the redactor must stay precise:
- phone numbers: ``phonenumbers`` valid in 14 regions (the redactor reads 4), plus any merely *possible*
  number of 9+ digits written the way phone numbers are (leading ``+``, ``0`` or ``(``); years, invoice
  numbers and order numbers are neither (tested);
- secrets: detect-secrets' entropy plugins searching unquoted strings (the redactor does not run them), with
  its keyword and service-key plugins read as an .env file (the redactor reads lines as YAML);
- canaries: simple, bounded patterns of its own for e-mails, URL credentials, PEM headers, keyword lines,
  IBANs (mod-97 checked here), card numbers (Luhn checked here), US SSNs, IPv4 addresses and common key
  prefixes.
A problem names the row's id, the field and the kind, never the value: the report must not leak either.
Every pattern is bounded (no nested repetition), so the check is linear in the text's length.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator

CHECK_REGIONS = ("US", "GB", "FR", "DE", "ES", "IT", "NL", "BE", "CH", "IE", "IN", "CA", "AU", "BR")
ENTROPY_BASE64, ENTROPY_HEX, MIN_RANDOM_LEN = 4.0, 3.0, 20
PLACEHOLDER = r"\[[A-Z_]{2,20}\]"

CANARIES: dict[str, re.Pattern] = {
    "EMAIL": re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"),
    "URL_CREDENTIALS": re.compile(r"://[^\s/@\[\]]{1,128}:[^\s/@]{1,128}@"),
    "PRIVATE_KEY": re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY|PRIVATE KEY-----"),
    "KEYWORD_LINE": re.compile(r"(?i)\b(?:password|passwd|passphrase|pwd|secret|api[_ -]?key|access[_ ]?key|"
                               r"token|pin)\s{0,3}[:=]\s{0,3}(?!" + PLACEHOLDER + r")[^\s\[]"),
    "SERVICE_KEY": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}|"
                              r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|"
                              r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{30,}|"
                              r"\bsk-[A-Za-z0-9-]{20,}"),
    "SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "IP": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
}
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE_RUN_RE = re.compile(r"[+(]?\d(?:[ \t().\-/]{0,3}\d){6,}")
DATE_LIKE_RE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97 == 1


def luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


@functools.lru_cache(maxsize=1)
def _plugins():
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
    others = [cls() for name, cls in sorted(get_mapping_from_secret_type_to_class().items())
              if "High Entropy" not in name and name != "Public IP (ipv4)"]
    return Base64HighEntropyString(limit=ENTROPY_BASE64), HexHighEntropyString(limit=ENTROPY_HEX), others


def _random_strings(line: str) -> Iterator[str]:
    b64, hexa, _ = _plugins()
    for plugin in (b64, hexa):
        for secret in plugin.analyze_line(filename=".env", line=line, line_number=0, enable_eager_search=True):
            value = secret.secret_value or ""
            if (len(value) >= MIN_RANDOM_LEN and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
                    and plugin.calculate_shannon_entropy(value) > plugin.entropy_limit):
                yield "RANDOM_STRING"


def _phones(text: str) -> Iterator[str]:
    import phonenumbers
    for run in PHONE_RUN_RE.finditer(text):
        raw = run.group(0)
        if DATE_LIKE_RE.fullmatch(raw):
            continue
        window = text[max(0, run.start() - 1):run.end() + 1]
        for region in CHECK_REGIONS:
            for m in phonenumbers.PhoneNumberMatcher(window, region, leniency=phonenumbers.Leniency.POSSIBLE):
                digits = sum(c.isdigit() for c in m.raw_string)
                if (digits >= 9 and m.raw_string[0] in "+0(") or any(
                        True for _ in phonenumbers.PhoneNumberMatcher(m.raw_string, region)):  # valid, as written
                    yield "PHONE"
                    return


def find_kinds(text: str) -> list[str]:
    """Kinds of personal data or secrets still present in ``text`` (sorted, empty when clean)."""
    found: set[str] = set()
    for kind, pattern in CANARIES.items():
        if pattern.search(text):
            found.add(kind)
    if any(iban_ok(m.group(0)) for m in IBAN_RE.finditer(text)):
        found.add("IBAN")
    if any(luhn_ok(m.group(0)) for m in CARD_RE.finditer(text)):
        found.add("CARD")
    found.update(_phones(text))
    _, _, plugins = _plugins()
    for line in text.split("\n"):
        found.update(_random_strings(line))
        for plugin in plugins:
            for secret in plugin.analyze_line(filename=".env", line=line, line_number=0):
                if not re.fullmatch(PLACEHOLDER, secret.secret_value or ""):
                    found.add("SECRET")
    return sorted(found)


def _fields(row: dict) -> Iterator[tuple[str, str]]:
    for i, m in enumerate(row.get("messages") or []):
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            yield f"{m.get('role', i)} turn", m["content"]
    for key in ("source_file", "section"):
        if isinstance(row.get(key), str):
            yield key, row[key]
    for tag in row.get("tags") or []:
        if isinstance(tag, str):
            yield "tags", tag


def row_problems(row: dict) -> list[str]:
    """One line per field holding personal data: the row's id, the field and the kinds (never the value)."""
    out = []
    for field, text in _fields(row):
        kinds = find_kinds(text)
        if kinds:
            out.append(f"example {row.get('id')}: {', '.join(kinds)} in its {field}")
    return out
