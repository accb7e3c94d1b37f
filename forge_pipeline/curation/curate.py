"""Extracted examples -> curated train and eval sets, with a report of every example dropped and why."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.config import ForgeSettings, load_config
from forge_pipeline.curation.dedup import find_duplicates
from forge_pipeline.curation.review import ReviewStore, apply_decisions, first_words
from forge_pipeline.curation.split import split_train_eval
from forge_pipeline.curation.user_turns import backtranslate_user_turns, backtranslation_enabled
from forge_pipeline.files import atomic_write_json, clean_stale_tmp, commit_files, read_jsonl, recover_commit

COMMIT_JOURNAL = ".curated.commit.json"


@dataclass
class CurationReport:
    input_count: int
    train_count: int
    eval_count: int
    # {"id", "source_file", "reason", "duplicate_of"?: 'note: "first words..."', "duplicate_of_id"?}
    dropped: list[dict] = field(default_factory=list)
    edited: int = 0
    user_turns: dict = field(default_factory=dict)  # back-translation's UserTurnReport, when it ran
    train_path: str = ""
    eval_path: str = ""

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(d["reason"] for d in self.dropped).items()))

    def to_dict(self) -> dict:
        return {**self.__dict__, "dropped_by_reason": self.dropped_by_reason,
                "curated_count": self.train_count + self.eval_count}


def _filter_and_dedup(examples: list[dict], config: ForgeSettings, drop) -> list[dict]:
    """Length bounds, then exact and near duplicates (the first in vault order is kept)."""
    sized = []
    for ex in examples:
        n = len(ex["messages"][-1]["content"].strip())
        if n < config.min_chars:
            drop(ex, "too_short", chars=n)
        elif n > config.max_chars:
            drop(ex, "too_long", chars=n)
        else:
            sized.append(ex)
    dupes = find_duplicates([ex["messages"][-1]["content"] for ex in sized], config.near_dup_threshold)
    unique = []
    for i, ex in enumerate(sized):
        if i in dupes:
            reason, kept_idx = dupes[i]
            kept = sized[kept_idx]
            # a person reads "which note, which words", not an id (issue 15); the id stays for tools
            drop(ex, reason, duplicate_of=f'{kept["source_file"]}: "{first_words(kept["messages"][-1]["content"])}"',
                 duplicate_of_id=kept["id"])
        else:
            unique.append(ex)
    return unique


def curate_examples(examples: list[dict], config: ForgeSettings, store: ReviewStore | None = None
                    ) -> tuple[list[dict], list[dict], CurationReport]:
    """Pure curation: review decisions, length filters, exact and near dedup, then the split."""
    dropped: list[dict] = []

    def drop(ex: dict, reason: str, **extra) -> None:
        dropped.append({"id": ex["id"], "source_file": ex["source_file"], "reason": reason, **extra})

    kept = examples
    edited = 0
    if store is not None:
        kept, rejected = apply_decisions(examples, store)
        edited = sum(1 for ex in kept if ex.get("edited"))
        for ex in rejected:
            drop(ex, "rejected_in_review")

    unique = _filter_and_dedup(kept, config, drop)
    train, evals = split_train_eval(unique, config.eval_fraction)
    report = CurationReport(input_count=len(examples), train_count=len(train), eval_count=len(evals),
                            dropped=dropped, edited=edited)
    return train, evals, report


def reviewable(examples: list[dict], config: ForgeSettings, *, note: str | None = None, tag: str | None = None,
               kind: str | None = None) -> list[dict]:
    """What curation would keep (length bounds, no duplicates), filtered by note (a substring of the
    vault path), tag (with or without '#', any case) and kind: reviewing a near-duplicate wastes a
    person's time, since curation drops it anyway."""
    want_tag = tag.lower().lstrip("#") if tag else None
    out = []
    for ex in _filter_and_dedup(examples, config, lambda *a, **k: None):
        if note and note.lower() not in ex["source_file"].lower():
            continue
        if want_tag and want_tag not in {t.lower().lstrip("#") for t in ex["tags"]}:
            continue
        if kind and ex["kind"] != kind:
            continue
        out.append(ex)
    return out


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def recover_curated(config: ForgeSettings) -> None:
    """Finish a curated/eval commit that a kill interrupted, then drop killed writers' temp files."""
    folder = config.training_data_dir
    recover_commit(folder / COMMIT_JOURNAL)
    clean_stale_tmp(folder, [config.curated_path.name, config.eval_path.name, config.curation_report_path.name,
                             COMMIT_JOURNAL])


def read_curated(config: ForgeSettings) -> tuple[list[dict], list[dict]]:
    """(train, eval) as one run wrote them: readers call this rather than reading the two files apart."""
    recover_curated(config)
    return read_jsonl(config.curated_path), read_jsonl(config.eval_path)


def curate(config: ForgeSettings | None = None, extracted_path: Path | None = None) -> CurationReport:
    """Read extracted.jsonl, write curated.jsonl, curated_eval.jsonl and curation_report.json."""
    config = config or load_config()
    recover_curated(config)
    src = Path(extracted_path) if extracted_path else config.extracted_path
    if not src.exists():
        raise FileNotFoundError(f"{src}: no extracted examples yet; run `forge extract` first")
    train, evals, report = curate_examples(read_jsonl(src), config, ReviewStore(config.review_decisions_path))
    if backtranslation_enabled(config):  # model-written user turns (issue 12): curation/user_turns.py
        rows, turns = backtranslate_user_turns(train + evals, config)
        train, evals, report.user_turns = rows[:len(train)], rows[len(train):], turns.to_dict()
    # One commit: after a kill the two files are never from different runs (a redo journal; see files.py).
    commit_files({config.curated_path: _jsonl_bytes(train), config.eval_path: _jsonl_bytes(evals)},
                 config.training_data_dir / COMMIT_JOURNAL)
    report.train_path, report.eval_path = str(config.curated_path), str(config.eval_path)
    atomic_write_json(config.curation_report_path, report.to_dict())
    return report
