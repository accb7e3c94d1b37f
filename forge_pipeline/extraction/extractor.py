"""Vault -> chat examples, incrementally.

Each note's examples are cached under FORGE_HOME keyed by the note's vault path and the sha256 of its
bytes (a note whose size and mtime are unchanged is not even read), with a fingerprint of the extraction
rules and code: an unchanged note is never parsed again,
a changed one is re-parsed, a deleted one drops out, and changing the rules re-parses everything.
The vault is only ever opened for reading.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from forge_pipeline.config import ForgeSettings, load_config
from forge_pipeline.extraction.chat_examples import build_messages, example_id
from forge_pipeline.extraction.detection import DetectionRules, detect_reflections, find_summary
from forge_pipeline.extraction.inventory import NoteFile, VaultError, scan_vault
from forge_pipeline.extraction.markdown import parse_note
from forge_pipeline.extraction.redaction import redact
from forge_pipeline.files import atomic_write_json, atomic_write_text, sha256_bytes, sha256_text, write_jsonl

CACHE_VERSION = 2


def _code_fingerprint() -> str:
    # A change to the extraction code invalidates cached results just like a change to the rules.
    here = Path(__file__).resolve().parent
    return sha256_text("".join(p.read_text(encoding="utf-8") for p in sorted(here.glob("*.py"))))
DATE_IN_NAME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass
class NoteResult:
    sha256: str
    examples: list[dict] = field(default_factory=list)
    redactions: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None


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


def extract_note(rel_path: str, raw: bytes, config: ForgeSettings, rules: DetectionRules) -> NoteResult:
    """One note's bytes -> its examples. Pure: no I/O, so it can be cached and tested in isolation."""
    result = NoteResult(sha256=sha256_bytes(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        result.skipped = f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); fix the encoding to include it"
        return result
    note = parse_note(text.lstrip("\ufeff"))
    if note.frontmatter_error:
        result.warnings.append(note.frontmatter_error + "; frontmatter ignored, body still read")
    title = str(note.frontmatter.get("title") or Path(rel_path).stem)
    day = note_date(rel_path, note.frontmatter)
    summary = find_summary(note, config.summary_sections)
    redactions: Counter = Counter()
    if summary:
        summary, counts = redact(summary)
        redactions.update(counts)
    title, counts = redact(title)
    redactions.update(counts)
    for reflection in detect_reflections(note, rules):
        reflection.text, counts = redact(reflection.text)
        redactions.update(counts)
        ex_id = example_id(rel_path, reflection.section, reflection.text)
        result.examples.append({
            "id": ex_id,
            "messages": build_messages(reflection, ex_id=ex_id, title=title, date=day,
                                       summary=summary if reflection.kind != "section" or summary != reflection.text else None,
                                       system_prompt=config.system_prompt),
            "source_file": rel_path,
            "tags": reflection.tags,
            "date": day,
            "kind": reflection.kind,
            "section": reflection.section,
        })
    result.redactions = dict(redactions)
    return result


class TrainingDataExtractor:
    """The seed's API: ``TrainingDataExtractor(config).extract()``, ``.get_stats()``, ``.save_to_jsonl(path)``."""

    def __init__(self, config: ForgeSettings | None = None, *, use_cache: bool = True, progress: bool = False):
        self.config = config or load_config()
        self.use_cache = use_cache
        self.progress = progress
        self.rules = DetectionRules.build(self.config.reflection_tags, self.config.reflection_patterns,
                                          self.config.reflection_sections, self.config.min_unit_words,
                                          self.config.summary_sections)
        self.examples: list[dict] = []
        self.stats: dict = {}

    @property
    def cache_path(self) -> Path:
        return self.config.cache_dir / "extraction-cache.json"

    def _fingerprint(self) -> str:
        c = self.config
        return sha256_text(json.dumps([CACHE_VERSION, _code_fingerprint(), sorted(c.reflection_tags), c.reflection_patterns,
                                       sorted(c.reflection_sections), c.summary_sections, c.min_unit_words,
                                       c.system_prompt, str(c.vault_dir)]))

    def _load_cache(self) -> dict:
        if not self.use_cache or not self.cache_path.exists():
            return {}
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged cache costs one full re-parse, never a failed run
        return data.get("notes", {}) if data.get("fingerprint") == self._fingerprint() else {}

    def _iter_notes(self, notes: list[NoteFile]) -> Iterable[NoteFile]:
        if not self.progress:
            return notes
        from tqdm import tqdm
        return tqdm(notes, desc="extract", unit="note")

    def extract(self) -> list[dict]:
        scan = scan_vault(self.config.vault_dir, self.config.excluded_folders, self.config.max_note_bytes)
        if not scan.notes:
            raise VaultError(f"no Markdown notes found in vault {self.config.vault_dir}")
        cache = self._load_cache()
        new_cache: dict[str, dict] = {}
        examples: list[dict] = []
        skipped, warnings = list(scan.skipped), list(scan.warnings)
        redactions: Counter = Counter()
        parsed = from_cache = 0
        for note in self._iter_notes(scan.notes):
            entry = cache.get(note.rel_path)
            # Same size and mtime as when cached: trust the cached hash without reading (as git does).
            if entry is not None and (entry.get("size"), entry.get("mtime_ns")) == (note.size, note.mtime_ns):
                from_cache += 1
            else:
                try:
                    raw = note.path.read_bytes()
                except OSError as e:
                    warnings.append({"file": note.rel_path, "problem": f"unreadable: {e.strerror or e}"})
                    skipped.append({"file": note.rel_path, "reason": "unreadable"})
                    continue
                if entry is not None and entry.get("sha256") == sha256_bytes(raw):
                    from_cache += 1  # touched but unchanged
                else:
                    parsed += 1
                    entry = extract_note(note.rel_path, raw, self.config, self.rules).__dict__
                entry = {**entry, "size": note.size, "mtime_ns": note.mtime_ns}
            new_cache[note.rel_path] = entry
            warnings += [{"file": note.rel_path, "problem": w} for w in entry["warnings"]]
            if entry["skipped"]:
                skipped.append({"file": note.rel_path, "reason": entry["skipped"]})
                warnings.append({"file": note.rel_path, "problem": entry["skipped"]})
                continue
            redactions.update(entry["redactions"])
            examples += entry["examples"]
        if self.use_cache:
            # compact: the cache is read and written on every run, and indentation doubles its cost
            atomic_write_text(self.cache_path, json.dumps({"fingerprint": self._fingerprint(), "notes": new_cache},
                                                          ensure_ascii=False, separators=(",", ":")))
        self.examples = examples
        by_tag = Counter(t.lower() for ex in examples for t in ex["tags"])
        self.stats = {
            "total": len(examples),
            "by_kind": dict(sorted(Counter(ex["kind"] for ex in examples).items())),
            "by_tag": dict(by_tag.most_common()),
            "notes_scanned": len(scan.notes),
            "notes_parsed": parsed,
            "notes_from_cache": from_cache,
            "notes_skipped": skipped,
            "warnings": warnings,
            "redactions": dict(sorted(redactions.items())),
            "vault": str(self.config.vault_dir),
        }
        return examples

    def get_stats(self) -> dict:
        return self.stats

    def save_to_jsonl(self, path: Path | None = None) -> Path:
        path = Path(path) if path else self.config.extracted_path
        write_jsonl(path, self.examples)
        atomic_write_json(path.with_name(path.stem + "_stats.json") if path != self.config.extracted_path
                          else self.config.extraction_stats_path, self.stats)
        return path


def extract_training_data(vault_path: Path | str | None = None, output_path: Path | str | None = None,
                          config: ForgeSettings | None = None, progress: bool = False) -> dict:
    """Extract the vault into JSONL and return the stats (the seed's one-call entry point)."""
    config = config or load_config()
    if vault_path is not None:
        config = config.model_copy(update={"vault": Path(vault_path)})
    extractor = TrainingDataExtractor(config, progress=progress)
    extractor.extract()
    out = extractor.save_to_jsonl(Path(output_path) if output_path else None)
    return {**extractor.get_stats(), "output": str(out)}
