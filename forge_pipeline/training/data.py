"""The training data, read and checked before any model loads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from forge_pipeline.files import read_jsonl, sha256_file
from forge_pipeline.training.errors import TrainingError


@dataclass(frozen=True)
class TrainingData:
    train_path: Path
    eval_path: Optional[Path]  # None when there is no eval split (or it is empty)
    train_rows: list[dict]
    eval_rows: list[dict]
    train_sha256: str
    eval_sha256: Optional[str]


def load_training_data(data_path: Path, eval_path: Optional[Path], min_examples: int) -> TrainingData:
    data_path = Path(data_path)
    if not data_path.exists():
        raise TrainingError(f"{data_path}: training data not found; run `forge curate` first")
    train_rows = read_jsonl(data_path)
    eval_rows = read_jsonl(eval_path) if eval_path and Path(eval_path).exists() else []
    if len(train_rows) < min_examples:
        raise TrainingError(f"{data_path}: {len(train_rows)} training examples, need at least {min_examples}. "
                            "Add reflections to the vault or lower min_examples.")
    bad = [i for i, r in enumerate(train_rows, 1) if not (isinstance(r.get("messages"), list) and len(r["messages"]) >= 2)]
    if bad:
        raise TrainingError(f"{data_path}: lines {bad[:5]} have no chat messages")
    has_eval = bool(eval_rows)
    return TrainingData(data_path, Path(eval_path) if has_eval else None, train_rows, eval_rows,
                        sha256_file(data_path), sha256_file(eval_path) if has_eval else None)


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """Chat rows as TRL prompt/completion pairs, so the loss covers the assistant turn only."""
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
