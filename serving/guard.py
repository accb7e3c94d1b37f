"""An ASGI middleware in front of every route: Host and Origin checks, and the request-body limit.

- Host: only the names in `ServingSettings.allowed_host_names` (loopback names, the bound address, the
  configured FORGE_TRUSTED_HOSTS). A web page that rebinds its DNS name to 127.0.0.1 sends its own name as
  Host and is refused (400), so it cannot reach the local server through the victim's browser.
- Origin: a browser sends it on cross-site POSTs (fetch, and plain HTML forms, which need no body to hit
  /admin/rollback); a POST whose Origin is not the server itself or an FORGE_ALLOWED_ORIGINS entry is
  refused (403) before any route runs.
- Body: counted while it arrives and cut off at `max_request_bytes` (413); never read whole first (a 1 GB
  chunked upload used to raise peak RSS by 1.4 GB before its 413).
"""
from __future__ import annotations

import json
from typing import Optional
from urllib.parse import urlsplit

from serving.errors import error_body
from serving.settings import ServingSettings

_STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:7373
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _send_error(send, status: int, message: str, kind: str = "invalid_request_error",
                      code: Optional[str] = None) -> None:
    body = json.dumps(error_body(message, kind, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    def __init__(self, app, settings: ServingSettings):
        self.app = app
        self.settings = settings
        self.hosts = settings.allowed_host_names
        self.origins = {o.rstrip("/").lower() for o in settings.allowed_origins}

    def _origin_ok(self, origin: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        if origin == "null":
            return False
        host = urlsplit(origin).hostname or ""
        return self.hosts is not None and host in self.hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.hosts is not None and _host_name(headers.get("host", "")) not in self.hosts:
            return await _send_error(send, 400, f"Host {headers.get('host', '')!r} is not served here; add it to "
                                     "FORGE_TRUSTED_HOSTS if it is yours", code="untrusted_host")
        method = scope.get("method", "GET")
        if method in _STATE_CHANGING and "origin" in headers and not self._origin_ok(headers["origin"]):
            return await _send_error(send, 403, f"requests from the web origin {headers['origin']!r} are refused; "
                                     "add it to FORGE_ALLOWED_ORIGINS if it is yours", code="foreign_origin")
        limit = self.settings.max_request_bytes
        too_large = f"request body larger than {limit} bytes"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _send_error(send, 413, too_large, code="request_too_large")
        received, state = 0, {"over": False, "started": False}

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    state["over"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # the 413 below replaces whatever the app answers
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            state["over"] = True
        if state["over"] and not state["started"]:
            await _send_error(send, 413, too_large, code="request_too_large")
