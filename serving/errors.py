"""OpenAI's error shape, {"error": {"message", "type", "param", "code"}}, for every refusal the server makes
(clients such as the openai package parse it, and retry only on 429/5xx)."""
from __future__ import annotations

from typing import Optional

from fastapi.responses import JSONResponse


class ServingError(Exception):
    """A refusal with an HTTP status, raised anywhere below the routes and rendered by `error_response`."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, *, status: Optional[int] = None, code: Optional[str] = None,
                 param: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code, self.param, self.headers = code, param, headers or {}
        if self.status >= 500:
            self.kind = "server_error"


class ContextOverflow(ServingError):
    """The prompt leaves no room in the context window (400, code context_length_exceeded)."""

    def __init__(self, n_ctx: int, prompt_tokens: int):
        super().__init__(f"This model's maximum context length is {n_ctx} tokens; the messages take "
                         f"{prompt_tokens} tokens, leaving {max(n_ctx - prompt_tokens, 0)} tokens available "
                         f"for the answer (at least 1 is needed). Shorten or drop messages.",
                         code="context_length_exceeded", param="messages")
        self.n_ctx, self.prompt_tokens = n_ctx, prompt_tokens


class Busy(ServingError):
    status = 429
    kind = "rate_limit_error"


def error_body(message: str, kind: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, kind: Optional[str] = None, code: Optional[str] = None,
                   param: Optional[str] = None, headers: Optional[dict] = None) -> JSONResponse:
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(status_code=status, content=error_body(message, kind, code, param), headers=headers)


def from_exception(e: ServingError) -> JSONResponse:
    return error_response(e.status, e.message, e.kind, e.code, e.param, e.headers)
