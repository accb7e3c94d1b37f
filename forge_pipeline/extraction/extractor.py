"""Vault -> chat examples, incrementally, with a typed report.

Each note's examples are cached under FORGE_HOME keyed by a hash of the note's vault path and the sha256
of its bytes (a note whose size and mtime are unchanged is not even read), with a fingerprint of the
extraction rules and code: an unchanged note is never parsed again, a changed one is re-parsed, a deleted
one drops out, and changing the rules re-parses everything. The vault is only ever opened for reading.

``extract_note`` is pure (bytes in, result out) and gets only the values it needs (``NoteOptions``);
``extract_vault`` walks a vault; ``run_extraction`` adds the files under FORGE_HOME. ``TrainingDataExtractor``
and ``extract_training_data`` are the public entry points users' scripts call.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from forge_pipeline.config import ForgeSettings, load_config
from forge_pipeline.extraction.inventory import NoteFile, ScanOptions, VaultError, scan_vault
from forge_pipeline.extraction.note import (  # noqa: F401 - re-exported: users' scripts and tests import them here
    NoteOptions,
    NoteResult,
    extract_note,
    options_from_settings,
    scan_options_from_settings,
)
from forge_pipeline.extraction.report import ExtractionReport, hints_for
from forge_pipeline.files import (
    atomic_write_json,
    atomic_write_text,
    clean_stale_tmp,
    sha256_bytes,
    sha256_text,
    write_jsonl,
)
from forge_pipeline.privacy.names import redact_file_entries, shown_path


def _path_key(rel_path: str) -> str:
    # Cache keys are hashes: a private note's file name is as private as its text.
    return sha256_text(rel_path)[:32]


def _load_cache(path: Path | None, fingerprint: str) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged cache costs one full re-parse, never a failed run
    return data.get("notes", {}) if data.get("fingerprint") == fingerprint else {}


def _iter_notes(notes: list[NoteFile], progress: bool) -> Iterable[NoteFile]:
    if not progress:
        return notes
    from tqdm import tqdm
    return tqdm(notes, desc="extract", unit="note")


def extract_vault(vault: Path, opts: NoteOptions, scan_opts: ScanOptions, cache_path: Path | None = None,
                  progress: bool = False) -> tuple[list[dict], ExtractionReport]:
    """Every note of ``vault`` -> (examples, report). With ``cache_path``, unchanged notes come from it."""
    scan = scan_vault(vault, options=scan_opts)
    if not scan.notes:
        raise VaultError(f"no Markdown notes found in vault {vault}")
    fingerprint = opts.fingerprint()
    cache = _load_cache(cache_path, fingerprint)
    new_cache: dict[str, dict] = {}
    examples: list[dict] = []
    # file names reach the CLI, the stats and Dagster's log: shown with their secrets redacted
    regions = opts.phone_regions
    report = ExtractionReport(vault=str(Path(vault).expanduser().resolve()), notes_scanned=len(scan.notes),
                              notes_skipped=redact_file_entries(scan.skipped, regions),
                              warnings=redact_file_entries(scan.warnings, regions))
    redactions, private_notes, blocks = Counter(), Counter(scan.private), Counter()
    for note in _iter_notes(scan.notes, progress):
        key = _path_key(note.rel_path)
        entry = cache.get(key)
        # Same size and mtime as when cached: trust the cached hash without reading (as git does).
        if entry is not None and (entry.get("size"), entry.get("mtime_ns")) == (note.size, note.mtime_ns):
            report.notes_from_cache += 1
        else:
            try:
                raw = note.path.read_bytes()
            except OSError as e:
                report.warnings.append({"file": shown_path(note.rel_path, regions),
                                        "problem": f"unreadable: {e.strerror or e}"})
                report.notes_skipped.append({"file": shown_path(note.rel_path, regions), "reason": "unreadable"})
                continue
            if entry is not None and entry.get("sha256") == sha256_bytes(raw):
                report.notes_from_cache += 1  # touched but unchanged
            else:
                report.notes_parsed += 1
                entry = extract_note(note.rel_path, raw, opts).__dict__
            entry = {**entry, "size": note.size, "mtime_ns": note.mtime_ns}
        new_cache[key] = entry
        if entry["private"]:
            private_notes[entry["private"]] += 1  # not named: the name can be as private as the text
            continue
        report.warnings += [{"file": shown_path(note.rel_path, regions), "problem": w} for w in entry["warnings"]]
        if entry["skipped"]:
            report.notes_skipped.append({"file": shown_path(note.rel_path, regions), "reason": entry["skipped"]})
            report.warnings.append({"file": shown_path(note.rel_path, regions), "problem": entry["skipped"]})
            continue
        blocks.update(entry["private_blocks"])
        redactions.update(entry["redactions"])
        examples += entry["examples"]
        report.notes_without_examples += not entry["examples"]
    if cache_path is not None:
        # compact: the cache is read and written on every run, and indentation doubles its cost
        atomic_write_text(cache_path, json.dumps({"fingerprint": fingerprint, "notes": new_cache},
                                                 ensure_ascii=False, separators=(",", ":")))
    report.total = len(examples)
    report.by_kind = dict(sorted(Counter(ex["kind"] for ex in examples).items()))
    report.by_tag = dict(Counter(t.lower() for ex in examples for t in ex["tags"]).most_common())
    report.redactions = dict(sorted(redactions.items()))
    report.private_notes = dict(sorted(private_notes.items()))
    report.private_blocks = dict(sorted(blocks.items()))
    return examples, report


CACHE_NAME = "extraction-cache.json"


def stats_path_for(output: Path, config: ForgeSettings) -> Path:
    return config.extraction_stats_path if output == config.extracted_path else \
        output.with_name(output.stem + "_stats.json")


def run_extraction(config: ForgeSettings | None = None, output_path: Path | None = None, *, progress: bool = False,
                   use_cache: bool = True) -> ExtractionReport:
    """Extract ``config.vault`` into JSONL under FORGE_HOME (or ``output_path``) and return the report."""
    config = config or load_config()
    examples, report = _extract_with(config, use_cache, progress)
    out = Path(output_path) if output_path else config.extracted_path
    return save_extraction(examples, report, out, config)


def _extract_with(config: ForgeSettings, use_cache: bool, progress: bool) -> tuple[list[dict], ExtractionReport]:
    cache_path = config.cache_dir / CACHE_NAME if use_cache else None
    clean_stale_tmp(config.cache_dir, [CACHE_NAME])
    examples, report = extract_vault(config.vault_dir, options_from_settings(config),
                                     scan_options_from_settings(config), cache_path, progress)
    report.hints = hints_for(report, config.reflection_tags, config.reflection_patterns, config.reflection_sections)
    return examples, report


def save_extraction(examples: list[dict], report: ExtractionReport, out: Path, config: ForgeSettings
                    ) -> ExtractionReport:
    stats = stats_path_for(out, config)
    clean_stale_tmp(out.parent, [out.name, stats.name])
    report.output, report.stats_path = str(write_jsonl(out, examples)), str(stats)
    atomic_write_json(stats, report.to_dict())
    return report


class TrainingDataExtractor:
    """``TrainingDataExtractor(config).extract()`` -> examples, ``.report`` / ``.get_stats()``,
    ``.save_to_jsonl(path)``: the object API users' scripts call."""

    def __init__(self, config: ForgeSettings | None = None, *, use_cache: bool = True, progress: bool = False):
        self.config = config or load_config()
        self.use_cache = use_cache
        self.progress = progress
        self.examples: list[dict] = []
        self.report: ExtractionReport | None = None

    @property
    def cache_path(self) -> Path:
        return self.config.cache_dir / CACHE_NAME

    def extract(self) -> list[dict]:
        self.examples, self.report = _extract_with(self.config, self.use_cache, self.progress)
        return self.examples

    def get_stats(self) -> dict:
        return self.report.to_dict() if self.report else {}

    def save_to_jsonl(self, path: Path | None = None) -> Path:
        if self.report is None:
            self.extract()
        save_extraction(self.examples, self.report, Path(path) if path else self.config.extracted_path, self.config)
        return Path(self.report.output)


def extract_training_data(vault_path: Path | str | None = None, output_path: Path | str | None = None,
                          config: ForgeSettings | None = None, progress: bool = False) -> ExtractionReport:
    """Extract the vault into JSONL and return the report (indexable like the dict it used to be)."""
    config = config or load_config()
    if vault_path is not None:
        config = config.model_copy(update={"vault": Path(vault_path)})
    return run_extraction(config, Path(output_path) if output_path else None, progress=progress)
