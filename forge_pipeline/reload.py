"""The seed's client interface to the serving process: reload_model() and get_model_status().

Both talk HTTP to the server at FORGE_SERVE_HOST:FORGE_SERVE_PORT (default 127.0.0.1:7373), sending
FORGE_ADMIN_TOKEN when it is set."""
from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from forge_pipeline.config import ForgeSettings


def _base_url() -> str:
    host = os.environ.get("FORGE_SERVE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{os.environ.get('FORGE_SERVE_PORT', '7373')}"


def _headers() -> dict:
    token = os.environ.get("FORGE_ADMIN_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def reload_model(config: ForgeSettings, new_model_path, backup: bool = True, timeout_s: float = 600) -> dict:
    """Ask the running server to validate, load and swap to ``new_model_path``; raises RuntimeError with the
    server's message when it refuses (the old model keeps serving)."""
    path = str(Path(str(new_model_path)).expanduser())
    try:
        r = httpx.post(f"{_base_url()}/admin/reload-model", json={"model_path": path, "backup": backup},
                       headers=_headers(), timeout=timeout_s)
    except httpx.HTTPError as e:
        raise RuntimeError(f"serving is not reachable at {_base_url()} ({e}); start it with `forge serve`") from None
    if r.status_code != 200:
        raise RuntimeError(f"reload refused ({r.status_code}): {r.json().get('error', {}).get('message', r.text)}")
    return r.json()


def get_model_status(config: ForgeSettings) -> dict:
    """The live server's model status (path, version, sha256, size_mb, loaded_at, requests served, previous),
    or, when it is not running, the last deployment recorded under FORGE_HOME."""
    try:
        r = httpx.get(f"{_base_url()}/admin/model-status", headers=_headers(), timeout=10)
        if r.status_code == 200:
            return {"serving": "up", **r.json()}
        return {"serving": "up", "error": r.json().get("error", {}).get("message", r.text)}
    except httpx.HTTPError:
        record = config.home_dir / "serving" / "deployments.json"
        current = json.loads(record.read_text()).get("current") if record.exists() else None
        return {"serving": "down", "url": _base_url(), "last_deployed": current,
                "size_mb": current.get("size_mb") if current else None}
