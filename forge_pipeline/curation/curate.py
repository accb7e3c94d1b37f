"""Extracted examples -> curated train and eval sets, with a report of every example dropped and why."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.config import ForgeSettings, load_config
from forge_pipeline.curation.dedup import find_duplicates
from forge_pipeline.curation.review import ReviewStore, apply_decisions
from forge_pipeline.curation.split import split_train_eval
from forge_pipeline.files import atomic_write_json, clean_stale_tmp, commit_files, read_jsonl, recover_commit

COMMIT_JOURNAL = ".curated.commit.json"


@dataclass
class CurationReport:
    input_count: int
    train_count: int
    eval_count: int
    dropped: list[dict] = field(default_factory=list)  # {"id", "source_file", "reason", "duplicate_of"?}
    edited: int = 0
    train_path: str = ""
    eval_path: str = ""

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(d["reason"] for d in self.dropped).items()))

    def to_dict(self) -> dict:
        return {**self.__dict__, "dropped_by_reason": self.dropped_by_reason,
                "curated_count": self.train_count + self.eval_count}


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

    sized = []
    for ex in kept:
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
            drop(ex, reason, duplicate_of=sized[kept_idx]["id"])
        else:
            unique.append(ex)

    train, evals = split_train_eval(unique, config.eval_fraction)
    report = CurationReport(input_count=len(examples), train_count=len(train), eval_count=len(evals),
                            dropped=dropped, edited=edited)
    return train, evals, report


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
    # One commit: after a kill the two files are never from different runs (a redo journal; see files.py).
    commit_files({config.curated_path: _jsonl_bytes(train), config.eval_path: _jsonl_bytes(evals)},
                 config.training_data_dir / COMMIT_JOURNAL)
    report.train_path, report.eval_path = str(config.curated_path), str(config.eval_path)
    atomic_write_json(config.curation_report_path, report.to_dict())
    return report
