"""The export manifest (models/<version>/manifest.json) and the last-export pointer (models/last_export.json),
typed, so no caller indexes raw JSON. Stored paths are relative to FORGE_HOME (``home``) when inside it, so
moving the data home to another disk keeps them right; ``from_home``-style resolution happens on read."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field, ValidationError

from forge_pipeline.files import atomic_write_json

MANIFEST = "manifest.json"
LAST_EXPORT = "last_export.json"  # which version the latest export produced or reused
FORMAT = 2  # 1: merged-only manifests (no "kind"); read as merged


class ManifestError(ValueError):
    """A manifest or pointer that cannot be read; the message names the file and the problem."""


def to_stored(path: Path, home: Path) -> str:
    """How a path is stored: relative to ``home`` when inside it (ForgeSettings.relative_to_home's rule)."""
    path = Path(path).expanduser().resolve()
    try:
        return path.relative_to(Path(home).expanduser().resolve()).as_posix()
    except ValueError:
        return str(path)


def from_stored(stored: str, home: Path) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else Path(home).expanduser().resolve() / p


class BaseGGUFRef(BaseModel):
    """The base GGUF an adapter was made for (cached under base_models_dir, shared by many versions)."""

    path: str  # relative to FORGE_HOME
    sha256: str
    quantization: str
    base_fingerprint: str
    size_mb: float


class SourceAdapter(BaseModel):
    path: str  # relative to FORGE_HOME
    fingerprint: str
    eval_loss: Optional[float] = None
    base_eval_loss: Optional[float] = None
    base_model: Optional[str] = None


class Lineage(BaseModel):
    """What the file was made from, also written into the adapter GGUF's forge.* metadata (hashes only)."""

    adapter_fingerprint: str
    data_sha256: Optional[str] = None
    eval_sha256: Optional[str] = None
    training_config_sha256: Optional[str] = None
    base_fingerprint: Optional[str] = None
    base_model: Optional[str] = None
    forge_version: str = ""


class ExportManifest(BaseModel):
    format: int = FORMAT
    version: str
    kind: Literal["adapter", "merged"] = "merged"
    file: str  # file name inside the version folder
    quantization: str  # merged: of the file; adapter: of the base it applies to
    sha256: str
    size_mb: float
    base: Optional[BaseGGUFRef] = None  # adapter exports only
    source_adapter: SourceAdapter
    lineage: Optional[Lineage] = None
    validation: dict = Field(default_factory=dict)
    timings: dict = Field(default_factory=dict)
    parity_tolerances: dict = Field(default_factory=dict)
    modelfile: Optional[str] = None  # merged exports: the Ollama Modelfile's name beside the GGUF
    created: str

    @classmethod
    def read(cls, version_dir: Path) -> ExportManifest:
        path = Path(version_dir) / MANIFEST
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no export manifest here") from None
        except ValidationError as e:
            raise ManifestError(f"{path}: not a valid export manifest ({e.error_count()} problems: "
                                f"{e.errors()[0]['loc']} {e.errors()[0]['msg']})") from None

    def write(self, version_dir: Path) -> Path:
        return atomic_write_json(Path(version_dir) / MANIFEST, self.model_dump(mode="json"))

    def gguf_path(self, version_dir: Path) -> Path:
        return Path(version_dir) / self.file

    def base_path(self, home: Path) -> Path | None:
        return from_stored(self.base.path, home) if self.base else None


class LastExport(BaseModel):
    manifest: str  # path of the version's manifest.json, relative to FORGE_HOME
    status: Literal["exported", "cached"]

    @classmethod
    def read(cls, models_dir: Path) -> LastExport | None:
        path = Path(models_dir) / LAST_EXPORT
        if not path.exists():
            return None
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            raise ManifestError(f"{path}: not a valid last-export pointer ({e.errors()[0]['msg']})") from None

    def write(self, models_dir: Path) -> Path:
        return atomic_write_json(Path(models_dir) / LAST_EXPORT, self.model_dump(mode="json"))


def read_last_export(models_dir: Path, home: Path) -> tuple[ExportManifest, Path] | None:
    """The manifest of the version the latest export produced or reused, and its folder; None before any
    export, or when that version has since been removed."""
    pointer = LastExport.read(models_dir)
    if pointer is None:
        return None
    manifest_path = from_stored(pointer.manifest, home)
    if not manifest_path.exists():
        return None
    return ExportManifest.read(manifest_path.parent), manifest_path.parent


def list_versions(models_dir: Path) -> list[tuple[ExportManifest, Path]]:
    """Every readable version under models_dir, oldest first (version names start with the export time)."""
    out = []
    for path in sorted(Path(models_dir).glob(f"*/{MANIFEST}")):
        try:
            out.append((ExportManifest.read(path.parent), path.parent))
        except ManifestError:
            continue  # a foreign or damaged folder is listed by `forge models` as such, never used
    return out
