"""The deployed-model history under FORGE_HOME/serving/deployments.json, so a restart comes back on the
last good model and a rollback knows what came before."""
from __future__ import annotations

import json
import time
from pathlib import Path

from forge_pipeline.files import atomic_write_json

MAX_HISTORY = 50


class DeploymentHistory:
    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict:
        if not self.path.exists():
            return {"current": None, "previous": None, "history": []}
        try:
            return json.loads(self.path.read_text())
        except ValueError:
            return {"current": None, "previous": None, "history": []}

    def record(self, current: dict, previous: dict | None, event: str) -> None:
        data = self.read()
        entry = {**current, "event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data.update(current=current, previous=previous, history=(data.get("history", []) + [entry])[-MAX_HISTORY:])
        atomic_write_json(self.path, data)
