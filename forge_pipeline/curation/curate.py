"""Extracted examples -> curated train and eval sets, with a report of every example dropped and why."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.config import ForgeSettings, load_config
from forge_pipeline.curation.dedup import find_duplicates
from forge_pipeline.curation.review import ReviewStore, apply_decisions
from forge_pipeline.curation.split import split_train_eval
from forge_pipeline.files import atomic_write_json, read_jsonl, write_jsonl


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


def curate(config: ForgeSettings | None = None, extracted_path: Path | None = None) -> CurationReport:
    """Read extracted.jsonl, write curated.jsonl, curated_eval.jsonl and curation_report.json."""
    config = config or load_config()
    src = Path(extracted_path) if extracted_path else config.extracted_path
    if not src.exists():
        raise FileNotFoundError(f"{src}: no extracted examples yet; run `forge extract` first")
    train, evals, report = curate_examples(read_jsonl(src), config, ReviewStore(config.review_decisions_path))
    report.train_path = str(write_jsonl(config.curated_path, train))
    report.eval_path = str(write_jsonl(config.eval_path, evals))
    atomic_write_json(config.curation_report_path, report.to_dict())
    return report
