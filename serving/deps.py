"""FastAPI dependencies: the app's settings and model manager, and the bearer-token checks."""
from __future__ import annotations

import hmac

from fastapi import Request

from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.settings import ServingSettings


def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def get_manager(request: Request) -> ModelManager:
    return request.app.state.manager


def _check_token(request: Request, token: str, what: str) -> None:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ServingError(f"{what} need 'Authorization: Bearer <FORGE_ADMIN_TOKEN>'", status=401,
                           code="invalid_api_key")


def require_admin(request: Request) -> None:
    """/admin/*: the token, whenever FORGE_ADMIN_TOKEN is set."""
    settings = get_settings(request)
    if settings.admin_token:
        _check_token(request, settings.admin_token, "admin endpoints")


def require_api(request: Request) -> None:
    """/v1/*: the token too when `settings.protect_api` (by default: serving bound beyond loopback)."""
    settings = get_settings(request)
    if settings.protect_api:
        _check_token(request, settings.admin_token, "the chat API and model list")
