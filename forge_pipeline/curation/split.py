"""Deterministic train/eval split by a hash of the example id.

An example's side depends on its id alone, so the eval set stays put across nightly runs as the vault
grows: yesterday's eval examples never leak into today's training data.
"""
from __future__ import annotations

import hashlib

BUCKETS = 10_000


def eval_bucket(example_id: str) -> int:
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big") % BUCKETS


def split_train_eval(examples: list[dict], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if len(examples) < 2:
        raise ValueError(f"need at least 2 curated examples to split train/eval, got {len(examples)}")
    cut = int(eval_fraction * BUCKETS)
    train, evals = [], []
    for ex in examples:
        (evals if eval_bucket(ex["id"]) < cut else train).append(ex)
    if not evals:  # at least one eval example: the lowest bucket, which is itself stable
        lowest = min(train, key=lambda ex: eval_bucket(ex["id"]))
        train.remove(lowest)
        evals.append(lowest)
    return train, evals
