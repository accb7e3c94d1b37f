"""reload_model() and get_model_status(): the Python interface to the running server that users' scripts
call. Both go through serving.client.ServingAdminClient (FORGE_SERVING_URL, FORGE_ADMIN_TOKEN; retries with
backoff), the same client `forge reload` and the Dagster deploy use."""
from __future__ import annotations

import json

from forge_pipeline.config import ForgeSettings
from serving.client import ServingAdminClient, ServingRefused, ServingUnavailable


def reload_model(config: ForgeSettings, new_model_path, backup: bool = True, timeout_s: float = 600,
                 base_path=None) -> dict:
    """Ask the running server to validate, load and swap to ``new_model_path`` (a full GGUF or a LoRA adapter
    GGUF); raises RuntimeError with the server's message when it refuses (the old model keeps serving)."""
    client = ServingAdminClient.from_env(timeout_s=timeout_s)
    try:
        return client.reload(new_model_path, backup=backup, base_path=base_path)
    except ServingRefused as e:
        raise RuntimeError(f"reload refused ({e.status}): {e.message}") from None
    except ServingUnavailable as e:
        raise RuntimeError(str(e)) from None


def get_model_status(config: ForgeSettings) -> dict:
    """The live server's model status (path, version, sha256, size_mb, loaded_at, requests served, previous),
    or, when it is not running, the last deployment recorded under FORGE_HOME."""
    client = ServingAdminClient.from_env()
    try:
        return {"serving": "up", **client.status(attempts=1)}
    except ServingRefused as e:
        return {"serving": "up", "error": e.message}
    except ServingUnavailable:
        record = config.serving_dir / "deployments.json"
        try:
            current = json.loads(record.read_text()).get("current") if record.exists() else None
        except (OSError, ValueError) as e:
            return {"serving": "down", "url": client.base_url, "error": f"{record} could not be read: {e}"}
        return {"serving": "down", "url": client.base_url, "last_deployed": current,
                "size_mb": current.get("size_mb") if current else None}
