"""Callback signatures and the report every training run returns (beneath the recipe's modules)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

LogFn = Callable[[str], None]  # one human-readable line (print, a Dagster log, a Pipes log)
MetricsFn = Callable[[dict], None]  # {"step": n, "loss": ..., ...} at each logging step


@dataclass
class TrainingReport:
    final_dir: str
    status: str  # "trained" | "resumed" | "cached"
    backend: str
    fingerprint: str
    metrics: dict = field(default_factory=dict)
    manifest_path: str = ""
