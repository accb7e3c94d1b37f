"""The deployed-model history under FORGE_HOME/serving/deployments.json, so a restart comes back on the
last good model and a rollback knows what came before (across restarts too: `previous` is recorded on
every event, start-ups included).

Paths inside FORGE_HOME are stored relative to it, so moving the data home keeps the record right. A file
that cannot be read is never ignored silently: it is moved aside (deployments.json.unreadable-<time>),
named in a warning that /admin/model-status shows, and a fresh history starts."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from serving.files import atomic_write_json

MAX_HISTORY = 50
_PATH_KEYS = ("path", "base_path")


class DeploymentHistory:
    def __init__(self, path: Path, home: Optional[Path] = None):
        self.path = Path(path)
        self.home = Path(home) if home else self.path.parent.parent
        self.warnings: list[str] = []

    def _rel(self, entry: Optional[dict]) -> Optional[dict]:
        if not entry:
            return entry
        out = dict(entry)
        for key in _PATH_KEYS:
            if out.get(key):
                try:
                    out[key] = Path(out[key]).relative_to(self.home).as_posix()
                except ValueError:
                    pass
        return out

    def _abs(self, entry: Optional[dict]) -> Optional[dict]:
        if not entry:
            return entry
        out = dict(entry)
        for key in _PATH_KEYS:
            if out.get(key) and not Path(out[key]).is_absolute():
                out[key] = str(self.home / out[key])
        return out

    def _empty(self) -> dict:
        return {"current": None, "previous": None, "history": []}

    def read(self) -> dict:
        if not self.path.exists():
            return self._empty()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except (OSError, ValueError) as e:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                self.path.rename(aside)
                where = f"moved to {aside.name}"
            except OSError:
                where = "left in place"
            message = (f"{self.path} could not be read ({type(e).__name__}: {str(e)[:120]}); {where}; the "
                       "deployment history starts afresh")
            if message not in self.warnings:
                self.warnings.append(message)
            return self._empty()
        return {**data, "current": self._abs(data.get("current")), "previous": self._abs(data.get("previous"))}

    def record(self, current: dict, previous: Optional[dict], event: str) -> None:
        data = self.read()
        entry = {**self._rel(current), "event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data.update(current=self._rel(current), previous=self._rel(previous),
                    history=(data.get("history", []) + [entry])[-MAX_HISTORY:])
        try:
            atomic_write_json(self.path, data)
        except OSError as e:  # the swap already happened: say so instead of failing the reload
            self.warnings.append(f"could not write {self.path} ({e}); a restart may not come back on this model")
