"""The adapter manifest (``<adapter_dir>/manifest.json``), typed, so no caller indexes raw JSON.

Paths (the base model's local folder, the training data) are stored relative to FORGE_HOME when inside it,
so moving the data home keeps them right; pass the data home to the ``*_path`` readers (or leave it out to
use FORGE_HOME). A hub id is kept as it is (``base_model.source == "hub"``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge_pipeline.files import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = 2  # 1: paths stored absolute, no "format" key (still read: absolute paths resolve to themselves)


class AdapterManifestError(ValueError):
    """A missing or unreadable adapter manifest; the message names the file and the problem."""


def _home(home: Optional[Path]) -> Path:
    if home is not None:
        return Path(home).expanduser().resolve()
    from forge_pipeline.config import load_config

    return load_config().home_dir


def to_stored(path: Path | str, home: Optional[Path] = None) -> str:
    """A path as manifests store it: relative to the data home when inside it, else absolute."""
    path = Path(path).expanduser().resolve()
    try:
        return path.relative_to(_home(home)).as_posix()
    except ValueError:
        return str(path)


def from_stored(stored: str, home: Optional[Path] = None) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else _home(home) / p


class BaseModelRef(BaseModel):
    name: str  # what was asked for (or the default)
    path: str  # stored form: relative to FORGE_HOME, absolute, or a hub id when source == "hub"
    source: str  # "embedded" | "gguf" | "local" | "hub"
    fingerprint: str
    # untrained turn tokens training seeded in memory: {token: source} (training/turn_tokens.py)
    seeded_turn_tokens: dict[str, str] = Field(default_factory=dict)


class DataRef(BaseModel):
    train_path: str
    train_sha256: str
    train_examples: int
    eval_path: Optional[str] = None
    eval_sha256: Optional[str] = None
    eval_examples: int = 0


class AdapterManifest(BaseModel):
    """What an adapter was trained from and how it went. Unknown keys are kept (newer writers may add some)."""

    model_config = ConfigDict(extra="allow")

    format: int = FORMAT
    fingerprint: str
    status: str  # "trained" | "resumed"
    base_model: BaseModelRef
    backend: str
    device: str
    hyperparameters: dict[str, Any]
    data: DataRef
    metrics: dict[str, Any] = Field(default_factory=dict)
    log_history: list[dict] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @staticmethod
    def path_in(adapter_dir: Path) -> Path:
        return Path(adapter_dir) / MANIFEST

    @classmethod
    def exists(cls, adapter_dir: Path) -> bool:
        return cls.path_in(adapter_dir).is_file()

    @classmethod
    def read(cls, adapter_dir: Path) -> AdapterManifest:
        path = cls.path_in(adapter_dir)
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise AdapterManifestError(f"{path}: no adapter manifest; train first (`forge train`)") from None
        except (OSError, ValidationError, ValueError) as e:
            raise AdapterManifestError(f"{path}: unreadable adapter manifest ({str(e).splitlines()[0]})") from None

    @classmethod
    def read_if_exists(cls, adapter_dir: Path) -> Optional[AdapterManifest]:
        return cls.read(adapter_dir) if cls.exists(adapter_dir) else None

    def write(self, adapter_dir: Path) -> Path:
        return atomic_write_json(self.path_in(adapter_dir), self.model_dump(mode="json"))

    def base_model_path(self, home: Optional[Path] = None) -> str:
        """Where to load the base from: a local folder (resolved against the data home) or a hub id."""
        if self.base_model.source == "hub":
            return self.base_model.path
        return str(from_stored(self.base_model.path, home))

    def train_path(self, home: Optional[Path] = None) -> Path:
        return from_stored(self.data.train_path, home)

    def eval_path(self, home: Optional[Path] = None) -> Optional[Path]:
        return from_stored(self.data.eval_path, home) if self.data.eval_path else None

    @property
    def eval_loss(self) -> Optional[float]:
        return self.metrics.get("eval_loss")

    @property
    def base_eval_loss(self) -> Optional[float]:
        return self.metrics.get("base_eval_loss")
