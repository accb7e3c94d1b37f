"""One loaded model at a time, swapped without dropping a request.

Each request leases the current model for its whole life (a streaming answer included), so it is answered
wholly by one model. A reload validates the new file in a probe process, loads it, then swaps the pointer
under a lock; the old model is closed when its last lease ends. Reloads are serialized: a second one
while one is running is refused (409), never interleaved. On any failure the old model keeps serving.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from forge_pipeline.files import sha256_file

from serving.deployments import DeploymentHistory
from serving.model_paths import BadModelError, check_gguf_header, resolve_model_path
from serving.probe import probe_in_subprocess


def _release_freed_memory() -> None:
    """glibc keeps freed llama.cpp buffers in its arenas; hand them back so RSS returns to its baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


class ReloadInProgress(RuntimeError):
    """Another reload is running (HTTP 409)."""


class NoModelError(RuntimeError):
    """No model is loaded (HTTP 503)."""


@dataclass
class LoadedModel:
    llm: object
    path: Path
    sha256: str
    size_mb: float
    loaded_at: float
    version: str
    requests_served: int = 0
    active: int = 0
    retired: bool = False
    generate_lock: threading.Lock = field(default_factory=threading.Lock)  # a llama.cpp context is single-threaded

    @property
    def model_id(self) -> str:
        return f"{self.version}:{self.sha256[:12]}"

    def info(self) -> dict:
        return {"path": str(self.path), "version": self.version, "sha256": self.sha256, "size_mb": self.size_mb,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "requests_served": self.requests_served, "model_id": self.model_id}


def version_of(path: Path) -> str:
    # models/<version>/<name>-<quant>.gguf, else the file's stem
    return path.parent.name if path.parent.parent.name == "models" else path.stem


class ModelManager:
    def __init__(self, *, roots: list[Path], history: DeploymentHistory, loader: Callable[[Path], object],
                 validation_timeout_s: float = 180):
        self.roots = roots
        self.history = history
        self._loader = loader
        self._timeout = validation_timeout_s
        self._lock = threading.Lock()  # guards current/previous and lease counts
        self._reload_lock = threading.Lock()
        self.current: Optional[LoadedModel] = None
        self.previous: Optional[dict] = None
        self.state = "no_model"

    # ---- requests ------------------------------------------------------------------------------------
    @contextmanager
    def lease(self) -> Iterator[LoadedModel]:
        with self._lock:
            model = self.current
            if model is None:
                raise NoModelError("no model is loaded; POST /admin/reload-model with a GGUF path")
            model.active += 1
            model.requests_served += 1
        try:
            yield model
        finally:
            with self._lock:
                model.active -= 1
                close = model.retired and model.active == 0
            if close:
                self._close(model)

    # ---- loading -------------------------------------------------------------------------------------
    def _close(self, model: LoadedModel) -> None:
        close = getattr(model.llm, "close", None)
        if close:
            close()
        model.llm = None
        _release_freed_memory()

    def _load(self, path: Path) -> LoadedModel:
        check_gguf_header(path)
        probe = probe_in_subprocess(path, self._timeout)
        if not probe.get("ok"):
            raise BadModelError(f"{path.name} failed validation: {probe.get('error')}")
        llm = self._loader(path)
        return LoadedModel(llm=llm, path=path, sha256=sha256_file(path), size_mb=round(path.stat().st_size / 2**20, 2),
                           loaded_at=time.time(), version=version_of(path))

    def _swap(self, new: LoadedModel, backup: bool, event: str) -> Optional[LoadedModel]:
        with self._lock:
            old = self.current
            self.current = new
            self.state = "ready"
            if old is not None:
                old.retired = True
                self.previous = old.info() if backup else None
                close_now = old.active == 0
            else:
                close_now = False
        if old is not None and close_now:
            self._close(old)
        self.history.record(new.info(), self.previous, event)
        return old

    def reload(self, raw_path: str, backup: bool = True, event: str = "reload", trusted: bool = False) -> dict:
        # ModelPathError (400) before anything is opened; `trusted` only for the operator's start-up setting
        path = resolve_model_path(raw_path, self.roots, anywhere=trusted)
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadInProgress("another reload is in progress; try again when it finishes")
        try:
            if self.current is None:
                self.state = "loading"
            try:
                new = self._load(path)
            except BaseException:
                if self.current is None:
                    self.state = "no_model"
                raise
            old = self._swap(new, backup, event)
            return {"status": "reloaded", "model": new.info(),
                    "previous": old.info() if old is not None and backup else None}
        finally:
            self._reload_lock.release()

    def rollback(self) -> dict:
        if not self.previous:
            raise BadModelError("no previous model to roll back to (the last reload used --no-backup, or none happened)")
        return self.reload(self.previous["path"], backup=True, event="rollback")

    def startup(self, configured: Optional[Path], log: Callable[[str], None] = print) -> None:
        """Come back on the last deployed model; else its predecessor; else the configured path; else none."""
        record = self.history.read()
        candidates = [(c or {}).get("path") for c in (record.get("current"), record.get("previous"))]
        candidates.append(str(configured) if configured else None)
        for cand in [c for c in candidates if c]:
            try:
                self.reload(cand, backup=True, event="startup", trusted=True)
                self.previous = record.get("previous") if cand == candidates[0] else self.previous
                log(f"serving {cand}")
                return
            except (ValueError, RuntimeError, OSError) as e:
                log(f"could not load {cand}: {e}")
        self.state = "no_model"
        log("no model loaded: /health reports no_model until POST /admin/reload-model")

    def status(self) -> dict:
        with self._lock:
            cur = self.current.info() if self.current else None
        if cur is None:
            return {"state": self.state, "model": None, "previous": self.previous}
        return {**cur, "state": self.state, "previous": self.previous}

    def shutdown(self) -> None:
        with self._lock:
            model, self.current = self.current, None
        if model is not None:
            self._close(model)
