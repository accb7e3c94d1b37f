"""One note's bytes -> its chat examples: pure (no I/O), so it is cached by content hash and tested alone.

It gets only the values it depends on (``NoteOptions``), all of them part of the cache fingerprint. A note
over its time budget is skipped with a reason rather than stopping the run: every pattern is linear
(test_hostile_notes.py), so the budget is the last line of defence for a pathological but legal note;
markdown-it cannot be interrupted mid-parse, and parses 1 MB of the worst input measured (``[[`` runs) in
about 12 s.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from forge_pipeline.config import ForgeSettings
from forge_pipeline.extraction.chat_examples import build_messages, example_id
from forge_pipeline.extraction.detection import DetectionRules, analyze_note, find_summary
from forge_pipeline.extraction.inventory import ScanOptions
from forge_pipeline.extraction.markdown import parse_note, split_frontmatter
from forge_pipeline.extraction.optout import note_private_reason, private_blocks
from forge_pipeline.extraction.redaction import DEFAULT_PHONE_REGIONS, redact, redaction_fingerprint
from forge_pipeline.files import sha256_bytes, sha256_text
from forge_pipeline.privacy.names import redact_path, redact_tags

CACHE_VERSION = 3
DATE_IN_NAME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def _code_fingerprint() -> str:
    # A change to the extraction code invalidates cached results just like a change to the rules.
    here = Path(__file__).resolve().parent
    files = [*sorted(here.glob("*.py")), here.parent / "privacy" / "names.py"]  # names.py redacts paths and tags
    return sha256_text("".join(p.read_text(encoding="utf-8") for p in files))


class NoteTimeBudgetExceeded(Exception):
    pass


@dataclass(frozen=True)
class NoteOptions:
    """The few values one note's extraction depends on (all of them part of the cache fingerprint)."""
    rules: DetectionRules
    summary_sections: tuple[str, ...] = ()
    system_prompt: str = ""
    time_budget_s: float = 20.0
    private_tags: frozenset[str] = frozenset({"private"})
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS  # how the redactor reads national phone numbers

    def fingerprint(self) -> str:
        r = self.rules
        return sha256_text(json.dumps([CACHE_VERSION, _code_fingerprint(), sorted(r.tags), list(r.patterns),
                                       sorted(r.sections), r.min_words, list(self.summary_sections),
                                       self.system_prompt, sorted(self.private_tags),
                                       redaction_fingerprint(self.phone_regions)]))


def options_from_settings(s: ForgeSettings) -> NoteOptions:
    rules = DetectionRules.build(s.reflection_tags, s.reflection_patterns, s.reflection_sections, s.min_unit_words,
                                 s.summary_sections)
    return NoteOptions(rules, tuple(s.summary_sections), s.system_prompt, s.note_time_budget_s,
                       frozenset(t.lower().lstrip("#") for t in s.private_tags), tuple(s.phone_regions))


def scan_options_from_settings(s: ForgeSettings) -> ScanOptions:
    return ScanOptions(tuple(s.excluded_folders), s.max_note_bytes, s.follow_external_symlinks,
                       tuple(s.private_folders), tuple(s.private_globs),
                       frozenset(t.lower().lstrip("#") for t in s.private_tags))


@dataclass
class NoteResult:
    sha256: str
    examples: list[dict] = field(default_factory=list)
    redactions: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None
    private: str | None = None  # why the whole note is excluded
    private_blocks: dict = field(default_factory=dict)


def note_date(rel_path: str, frontmatter: dict) -> str | None:
    m = DATE_IN_NAME_RE.search(Path(rel_path).stem)
    candidate = m.group(1) if m else frontmatter.get("date")
    if isinstance(candidate, (date, datetime)):
        return candidate.isoformat()[:10]
    if isinstance(candidate, str):
        try:
            return date.fromisoformat(candidate.strip()[:10]).isoformat()
        except ValueError:
            return None
    return None


def decode_note(raw: bytes) -> tuple[str, str | None]:
    """(text, warning). Invalid bytes become U+FFFD instead of losing the whole note."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        bad = sum(1 for ch in raw.decode("utf-8", "surrogateescape") if "\udc80" <= ch <= "\udcff")
        return raw.decode("utf-8", "replace"), (
            f"not valid UTF-8 at byte {e.start} ({raw[e.start:e.start + 1]!r}; {bad} bad bytes in all); "
            "read with replacement characters - re-save it as UTF-8 to keep those characters")


def _redact_path(rel_path: str, counts: Counter, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str:
    """The path keeps its folders and extension; a secret written in a name is replaced."""
    clean, c = redact_path(rel_path, phone_regions, redact)  # this module's redact (tests simulate misses on it)
    counts.update(c)
    return clean


@contextlib.contextmanager
def _alarm(seconds: float):
    """Interrupt the note when its budget runs out, even inside one long call (a redactor given 1 MB of
    digits took 50 s in a single call; the per-block ``check`` cannot see that). The budget is CPU time
    (ITIMER_VIRTUAL / SIGVTALRM, which nothing else here uses; SIGALRM belongs to pytest-timeout and
    others): a busy machine does not push an ordinary note over it. Signals reach only the main thread;
    elsewhere the per-block check remains."""
    usable = (hasattr(signal, "setitimer") and hasattr(signal, "SIGVTALRM")
              and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGVTALRM) in (signal.SIG_DFL, None))
    if not usable:
        yield
        return

    def expire(_signum, _frame):
        raise NoteTimeBudgetExceeded

    signal.signal(signal.SIGVTALRM, expire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, signal.SIG_DFL)


def extract_note(rel_path: str, raw: bytes, opts: NoteOptions) -> NoteResult:
    """One note's bytes -> its examples. Pure: no I/O, so it can be cached and tested in isolation."""
    start = time.process_time()

    def check() -> None:
        if time.process_time() - start > opts.time_budget_s:
            raise NoteTimeBudgetExceeded

    result = NoteResult(sha256=sha256_bytes(raw))
    try:
        with _alarm(opts.time_budget_s):
            return _extract(rel_path, raw, opts, result, check)
    except NoteTimeBudgetExceeded:
        result.examples, result.redactions = [], {}
        result.skipped = (f"over its time budget ({opts.time_budget_s:g} s, FORGE_NOTE_TIME_BUDGET_S); "
                          "not extracted")
        return result


def _extract(rel_path: str, raw: bytes, opts: NoteOptions, result: NoteResult, check) -> NoteResult:
    text, warning = decode_note(raw)
    if warning:
        result.warnings.append(warning)
    text = text.lstrip("\ufeff")
    note = parse_note(text)
    check()
    if note.frontmatter_error:
        result.warnings.append(note.frontmatter_error + "; frontmatter ignored, body still read")
    result.private = note_private_reason(note, split_frontmatter(text)[0], opts.private_tags)
    if result.private:
        # the result is cached: a warning can quote the note (a YAML anchor's name), so only the reason stays
        result.warnings = []
        return result
    mask, private_counts = private_blocks(note, opts.private_tags)
    result.private_blocks = dict(private_counts)
    redactions: Counter = Counter()
    title = str(note.frontmatter.get("title") or Path(rel_path).stem)[:200]
    title, c = redact(title, opts.phone_regions)
    redactions.update(c)
    day = note_date(rel_path, note.frontmatter)
    summary = find_summary(note, list(opts.summary_sections), private_mask=mask)
    if summary:
        summary, c = redact(summary, opts.phone_regions)
        redactions.update(c)
    source_file = _redact_path(rel_path, redactions, opts.phone_regions)
    context_redactions = Counter(redactions)
    for reflection in analyze_note(note, opts.rules, mask, check).reflections:
        check()
        reflection.text, c = redact(reflection.text, opts.phone_regions)
        redactions.update(c)
        # this example's own report (its title, summary and path included): counts by type, never the values
        example_redactions = context_redactions + Counter(c)
        if reflection.section:
            reflection.section, c = redact(reflection.section, opts.phone_regions)
            redactions.update(c)
            example_redactions.update(c)
        tags, c = redact_tags(reflection.tags, opts.phone_regions, redact)  # a tag can hold a token or an e-mail
        redactions.update(c)
        example_redactions.update(c)
        ex_id = example_id(rel_path, reflection.section, reflection.text)
        result.examples.append({
            "id": ex_id,
            "messages": build_messages(reflection, ex_id=ex_id, title=title, date=day,
                                       summary=summary if reflection.kind != "section" or summary != reflection.text
                                       else None, system_prompt=opts.system_prompt),
            "source_file": source_file,
            "tags": tags,
            "date": day,
            "kind": reflection.kind,
            "section": reflection.section,
            "redactions": dict(sorted(example_redactions.items())),
        })
    result.redactions = dict(redactions)
    return result
