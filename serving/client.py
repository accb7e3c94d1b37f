"""ServingAdminClient: the one client for serving's admin API (used by `forge reload`/`forge status`,
forge_pipeline.reload and the Dagster resource).

    client = ServingAdminClient.from_env()        # FORGE_SERVING_URL, FORGE_ADMIN_TOKEN
    client.reload("~/.companion/models/v3/adapter.gguf")   # or a full GGUF; base_path= for another base
    client.rollback(); client.status(); client.health()

Connection errors, 409 (a reload already running) and 502/503/504 are retried with exponential backoff;
any other refusal raises ServingRefused at once with the server's message and status."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import httpx

from serving.settings import DEFAULT_URL, is_loopback, split_url

RETRIED = (409, 502, 503, 504)


class ServingUnavailable(RuntimeError):
    """Serving could not be reached (or stayed busy) through every attempt."""


class ServingRefused(RuntimeError):
    """Serving answered with an error that retrying will not fix (400, 401, 404, 422, ...)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"serving refused ({status}): {message}")
        self.status, self.message = status, message


def _client_url(url: str) -> str:
    """A bind-all address is not where a client connects: use loopback instead."""
    host, port = split_url(url)
    if host in ("0.0.0.0", "::", ""):
        return url.replace(f"//{host}", "//127.0.0.1", 1) if host else f"http://127.0.0.1:{port}"
    return url.rstrip("/")


class ServingAdminClient:
    def __init__(self, base_url: str = DEFAULT_URL, token: Optional[str] = None, *, max_attempts: int = 6,
                 backoff_s: float = 1.0, timeout_s: float = 600.0, log: Callable[[str], None] = lambda _m: None):
        self.base_url = _client_url(base_url)
        self.token = token
        self.max_attempts, self.backoff_s, self.timeout_s, self.log = max_attempts, backoff_s, timeout_s, log

    @classmethod
    def from_env(cls, **overrides) -> ServingAdminClient:
        """FORGE_SERVING_URL (default http://127.0.0.1:7373) and FORGE_ADMIN_TOKEN; keyword overrides win."""
        base = {"base_url": os.environ.get("FORGE_SERVING_URL") or DEFAULT_URL,
                "token": os.environ.get("FORGE_ADMIN_TOKEN") or None}
        return cls(**{**base, **overrides})

    @property
    def is_local(self) -> bool:
        return is_loopback(split_url(self.base_url)[0])

    def _request(self, method: str, path: str, json: Optional[dict] = None, timeout: Optional[float] = None,
                 attempts: Optional[int] = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        attempts = attempts or self.max_attempts
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                r = httpx.request(method, self.base_url + path, json=json, headers=headers,
                                  timeout=timeout or self.timeout_s)
                body = r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else {}
                if r.status_code < 400:
                    return body
                message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
                message = message or r.text[:300] or r.reason_phrase
                if r.status_code not in RETRIED:
                    raise ServingRefused(r.status_code, message)
                last = f"{r.status_code} {message}"
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < attempts:
                wait = self.backoff_s * 2 ** (attempt - 1)
                self.log(f"serving at {self.base_url} not ready ({last}); retry {attempt}/{attempts - 1} in {wait:.0f} s")
                time.sleep(wait)
        raise ServingUnavailable(f"serving at {self.base_url} did not answer {method} {path} after {attempts} "
                                 f"attempt(s) ({last}). Start it with `forge serve`, or set FORGE_SERVING_URL "
                                 "to where it runs.")

    def reload(self, model_path, backup: bool = True, base_path=None) -> dict:
        """Swap to a full GGUF or a LoRA adapter GGUF (on the loaded base, or on `base_path`)."""
        body = {"model_path": str(Path(str(model_path)).expanduser()), "backup": backup}
        if base_path:
            body["base_path"] = str(Path(str(base_path)).expanduser())
        return self._request("POST", "/admin/reload-model", body)

    def rollback(self) -> dict:
        return self._request("POST", "/admin/rollback")

    def status(self, attempts: Optional[int] = None) -> dict:
        return self._request("GET", "/admin/model-status", timeout=30, attempts=attempts)

    def health(self, attempts: Optional[int] = 1) -> dict:
        """{"status": "ready"|"loading"|"no_model", ...}; a 503 from /health is an answer, not an error."""
        try:
            r = httpx.get(self.base_url + "/health", timeout=10)
        except httpx.HTTPError as e:
            raise ServingUnavailable(f"serving at {self.base_url} is not reachable ({type(e).__name__})") from None
        return r.json()
