"""Disk stays bounded: keep the newest N model versions plus whatever serving uses (live and rollback
target), prune the rest after each export; check free space before an export starts.

Before this, nothing was ever deleted: a merged 8B q4_k_m is 4.7 GB a night (bench/results/
gpu_export_8b_h100.json), terabytes a year. What serving uses is read from its deployment record
(FORGE_HOME/serving/deployments.json, serving/deployments.py owns the format): every path-like value in its
"current" and "previous" entries is protected, whatever the entry's shape, so a format change there cannot
make us delete a live file. An unreadable record stops pruning (we cannot tell what is live) instead of
being treated as empty.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.export.base_gguf import base_ggufs
from forge_pipeline.export.manifest import LastExport, from_stored, list_versions
from forge_pipeline.export.merge import ExportError

DEPLOYMENTS = "deployments.json"
DEFAULT_KEEP = 5


class InsufficientSpaceError(ExportError):
    """Not enough free disk for an export; the message gives needed vs free."""


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)  # versions kept only because serving uses them
    freed_mb: float = 0.0
    skipped: str | None = None  # why nothing was pruned


def _paths_in(obj, home: Path) -> Iterable[Path]:
    """Every string under a key naming a path (path, model_path, base_path, lora_path, ...), at any depth."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, str) and (key == "path" or key.endswith(("_path", "_gguf", "gguf"))):
                yield from_stored(value, home).resolve()
            else:
                yield from _paths_in(value, home)
    elif isinstance(obj, list):
        for item in obj:
            yield from _paths_in(item, home)


def serving_paths(serving_dir: Path, home: Path) -> set[Path]:
    """Files serving uses now or would roll back to. Raises ExportError when the record exists but cannot
    be read: pruning must then stop, not guess."""
    record = Path(serving_dir) / DEPLOYMENTS
    if not record.exists():
        return set()
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{record}: unreadable ({e}); not pruning, since what is live cannot be known") from e
    if not isinstance(data, dict):
        raise ExportError(f"{record}: expected a JSON object; not pruning")
    return set(_paths_in({k: data.get(k) for k in ("current", "previous")}, home))


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def prune_versions(models_dir: Path, home: Path, *, keep: int = DEFAULT_KEEP, serving_dir: Path | None = None,
                   protected: Iterable[Path] = (), base_models_dir: Path | None = None,
                   dry_run: bool = False) -> PruneReport:
    """Remove all but the newest ``keep`` versions, never one holding a protected file (serving's live and
    rollback models, ``protected``), nor the version the last-export pointer names. Then remove cached base
    GGUFs that no remaining version and no protected path uses."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    report = PruneReport()
    try:
        guarded = serving_paths(serving_dir, home) if serving_dir else set()
    except ExportError as e:
        report.skipped = str(e)
        return report
    guarded |= {Path(p).expanduser().resolve() for p in protected}
    pointer = LastExport.read(models_dir)
    if pointer:
        guarded.add(from_stored(pointer.manifest, home).resolve())
    versions = list_versions(models_dir)  # oldest first
    newest = {d.resolve() for _, d in versions[-keep:]}
    kept_bases: set[Path] = set()
    for manifest, folder in versions:
        folder = folder.resolve()
        uses = [p for p in guarded if p == folder or folder in p.parents]
        if folder in newest or uses:
            report.kept.append(folder.name)
            if folder not in newest:
                report.protected.append(folder.name)
            if manifest.base:
                kept_bases.add(from_stored(manifest.base.path, home).resolve())
            continue
        report.freed_mb += _dir_size(folder) / 2**20
        report.removed.append(folder.name)
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    if base_models_dir:
        for base in base_ggufs(base_models_dir):
            b = base.resolve()
            if b in kept_bases or b in guarded:
                continue
            report.freed_mb += b.stat().st_size / 2**20
            report.removed.append(str(base.relative_to(base_models_dir)))
            if not dry_run:
                b.unlink(missing_ok=True)
                b.with_suffix(".json").unlink(missing_ok=True)
    report.freed_mb = round(report.freed_mb, 1)
    return report


def check_free_space(folder: Path, needed_bytes: int, what: str = "this export") -> None:
    """Fail before any work when ``folder``'s disk has less than ``needed_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise InsufficientSpaceError(
            f"{what} needs about {needed_bytes / 2**30:.2f} GiB free in {folder}, but only "
            f"{free / 2**30:.2f} GiB are free; free some space (`forge models prune`) or lower "
            f"FORGE_KEEP_MODEL_VERSIONS")


def params_from_config(config: dict) -> int | None:
    """Approximate parameter count of a decoder-only transformer from its config (None when unknown)."""
    c = config.get("text_config", config)
    try:
        h, layers, inter, vocab = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    except KeyError:
        return None
    heads = c.get("num_attention_heads", 1)
    head_dim = c.get("head_dim") or h // heads
    kv = c.get("num_key_value_heads", heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    embed = vocab * h * (1 if c.get("tie_word_embeddings", False) else 2)
    return int(layers * (attn + 3 * h * inter) + embed)


# Bytes per parameter of each GGUF file type (q4_k_m ~4.85 bits/weight, q5_k_m ~5.7, q8_0 8.5).
BYTES_PER_PARAM = {"f16": 2.0, "q8_0": 1.07, "q5_k_m": 0.72, "q4_k_m": 0.61}


def export_space_needed(n_params: int, quant: str, *, merged: bool, base_cached: bool, base_quantized: bool,
                        adapter_bytes: int) -> int:
    """Peak bytes an export writes, with 10% margin. Merged: 16-bit HF copy + f16 GGUF + the quantized file
    coexist before the work folder is removed. Adapter: the adapter GGUF (<= the PEFT file), plus, when the
    base GGUF is not cached yet, the same three for the base (the 16-bit copy only for a quantized base)."""
    final = 0 if quant == "f16" else n_params * BYTES_PER_PARAM[quant]
    whole = (2 * n_params if merged or base_quantized else 0) + 2 * n_params + final
    need = adapter_bytes + (whole if merged or not base_cached else 0)
    return int(need * 1.1)
