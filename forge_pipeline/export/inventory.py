"""What `forge models` lists: each exported version with its kind, size, eval numbers, the gate's decision
(when the quality gate evaluated it) and whether serving has it live or as its rollback target."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from forge_pipeline.export.base_gguf import base_ggufs
from forge_pipeline.export.manifest import ExportManifest, from_stored, list_versions
from forge_pipeline.export.retention import DEPLOYMENTS
from forge_pipeline.files import sha256_text


@dataclass
class VersionRow:
    version: str
    created: str
    kind: str  # "adapter" | "merged"
    quantization: str
    size_mb: float  # the version's own files (a shared base GGUF is listed once, under bases)
    file: str
    serving: str = ""  # "live" | "previous" | ""
    eval_loss: float | None = None
    base_eval_loss: float | None = None
    perplexity_ratio: float | None = None
    gate: str | None = None  # "deploy" | "blocked" | None (not evaluated)
    gate_reasons: list[str] = field(default_factory=list)


def _serving_roles(serving_dir: Path, home: Path) -> dict[Path, str]:
    record = Path(serving_dir) / DEPLOYMENTS
    try:
        data = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    except (OSError, ValueError):
        return {}
    roles = {}
    for role in ("previous", "current"):  # current last: a file both live and previous shows as live
        entry = data.get(role) if isinstance(data, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            roles[from_stored(entry["path"], home).resolve()] = "live" if role == "current" else "previous"
    return roles


def _gate(manifest: ExportManifest, evaluation_dir: Path | None):
    """The quality gate's decision for this file, found the way evaluation names its folder: the first 16 hex
    of sha256 of the served identity (GGUF sha256, plus ":" + adapter sha256 for an adapter)."""
    if evaluation_dir is None:
        return None
    identity = f"{manifest.base.sha256}:{manifest.sha256}" if manifest.kind == "adapter" and manifest.base \
        else manifest.sha256
    path = Path(evaluation_dir) / sha256_text(identity)[:16] / "decision.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return None


def model_versions(models_dir: Path, home: Path, serving_dir: Path | None = None,
                   evaluation_dir: Path | None = None) -> list[VersionRow]:
    roles = _serving_roles(serving_dir, home) if serving_dir else {}
    rows = []
    for manifest, folder in reversed(list_versions(models_dir)):  # newest first
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        decision = _gate(manifest, evaluation_dir)
        rows.append(VersionRow(
            manifest.version, manifest.created, manifest.kind, manifest.quantization, round(size / 2**20, 2),
            str(manifest.gguf_path(folder)), roles.get(manifest.gguf_path(folder).resolve(), ""),
            manifest.source_adapter.eval_loss, manifest.source_adapter.base_eval_loss,
            manifest.validation.get("perplexity_ratio"),
            None if decision is None else ("deploy" if decision.get("deploy") else "blocked"),
            list((decision or {}).get("reasons") or [])))
    return rows


def base_rows(base_models_dir: Path) -> list[dict]:
    return [{"path": str(p), "size_mb": round(p.stat().st_size / 2**20, 2)} for p in base_ggufs(base_models_dir)]


def as_dicts(rows: list[VersionRow]) -> list[dict]:
    return [asdict(r) for r in rows]
