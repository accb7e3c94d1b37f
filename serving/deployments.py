"""The deployed-model history under FORGE_HOME/serving/deployments.json, so a restart comes back on the
last good model and a rollback knows what came before (across restarts too: `previous` is recorded on
every event, start-ups included).

Paths inside FORGE_HOME are stored relative to it, so moving the data home keeps the record right. A file
that cannot be read is never ignored silently: it is moved aside (deployments.json.unreadable-<time>),
named in a warning that /admin/model-status shows, and a fresh history starts.

`rolled_back_from` (the one owner of this fact) names the model a person rolled back from, so the nightly's
deploy sensor does not put it back: set by a rollback, kept across start-ups, cleared by any other reload
(a newer model deployed, or one deployed by hand)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from serving.files import atomic_write_json

MAX_HISTORY = 50
_UNREAD: dict = {}  # sentinel: the file has not been read yet
_PATH_KEYS = ("path", "base_path")


class DeploymentHistory:
    def __init__(self, path: Path, home: Optional[Path] = None):
        self.path = Path(path)
        self.home = Path(home) if home else self.path.parent.parent
        self.warnings: list[str] = []
        self._rolled_back_from: Optional[dict] = _UNREAD

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
        self._rolled_back_from = None
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
        self._rolled_back_from = data.get("rolled_back_from") or None
        return {**data, "current": self._abs(data.get("current")), "previous": self._abs(data.get("previous"))}

    def rolled_back_from(self) -> Optional[dict]:
        """{sha256, version, model_id, at} of the model a person rolled back from, while that still holds
        (kept in memory from the last read or write: /admin/model-status asks on every call)."""
        if self._rolled_back_from is _UNREAD:
            self.read()
        return self._rolled_back_from

    def record(self, current: dict, previous: Optional[dict], event: str) -> None:
        data = self.read()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = {**self._rel(current), "event": event, "at": now}
        data.update(current=self._rel(current), previous=self._rel(previous),
                    history=(data.get("history", []) + [entry])[-MAX_HISTORY:])
        if event == "rollback" and previous:  # after a rollback, `previous` is the model it left
            data["rolled_back_from"] = {k: previous.get(k) for k in ("sha256", "version", "model_id")} | {"at": now}
        elif event != "startup":
            data.pop("rolled_back_from", None)
        self._rolled_back_from = data.get("rolled_back_from")
        try:
            atomic_write_json(self.path, data)
        except OSError as e:  # the swap already happened: say so instead of failing the reload
            self.warnings.append(f"could not write {self.path} ({e}); a restart may not come back on this model")
