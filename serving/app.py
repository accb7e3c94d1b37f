"""FastAPI app: OpenAI-compatible chat over llama-cpp-python, with zero-downtime reload and rollback.

`create_app(settings)` builds it; the model is loaded in the lifespan; every route reaches the model only
through the `model_lease` dependency."""
from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Optional, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from serving.deployments import DeploymentHistory
from serving.model_manager import LoadedModel, ModelManager, NoModelError, ReloadInProgress
from serving.model_paths import BadModelError, ModelPathError
from serving.settings import ServingSettings


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # OpenAI's form: token id (as a string) -> bias in [-100, 100]
    logit_bias: Optional[dict[str, float]] = Field(None, max_length=1024)
    stream: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias):
        """-> {token id: bias}, the form llama-cpp-python takes."""
        for key, value in (bias or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias values lie in [-100, 100], got {value}")
        return {int(k): v for k, v in bias.items()} if bias else None


class ReloadRequest(BaseModel):
    model_path: str
    backup: bool = True


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def default_loader(settings: ServingSettings):
    def load(path: Path):
        from llama_cpp import Llama

        return Llama(str(path), n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                     n_gpu_layers=settings.n_gpu_layers, verbose=False)
    return load


def create_app(settings: Optional[ServingSettings] = None, loader=None) -> FastAPI:
    settings = settings or ServingSettings()
    manager = ModelManager(roots=settings.model_roots, history=DeploymentHistory(settings.deployments_path),
                           loader=loader or default_loader(settings), validation_timeout_s=settings.validation_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(manager.startup, settings.model_path)
        yield
        manager.shutdown()

    app = FastAPI(title="forge serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.manager = manager
    app.state.settings = settings

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_request_bytes):
            return _error(413, f"request body larger than {settings.max_request_bytes} bytes", "invalid_request_error")
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = await request.body()  # chunked upload: measure what arrived
            if len(body) > settings.max_request_bytes:
                return _error(413, f"request body larger than {settings.max_request_bytes} bytes", "invalid_request_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return _error(500, "internal server error", "server_error")  # never a stack trace

    def require_admin(request: Request) -> None:
        if not settings.admin_token:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            raise HTTPException(401, "admin endpoints need 'Authorization: Bearer <FORGE_ADMIN_TOKEN>'")

    def model_lease() -> Iterator[LoadedModel]:
        try:
            with manager.lease() as model:
                yield model
        except NoModelError as e:
            raise HTTPException(503, str(e)) from None

    @app.get("/health")
    def health():
        s = manager.status()
        body = {"status": "ready" if s["state"] == "ready" and manager.current is not None else s["state"],
                "model": s.get("model_id")}
        return JSONResponse(status_code=200 if body["status"] == "ready" else 503, content=body)

    @app.get("/v1/models")
    def models():
        cur = manager.current
        data = [{"id": cur.model_id, "object": "model", "created": int(cur.loaded_at), "owned_by": "forge"}] if cur else []
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):
        max_tokens = req.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise HTTPException(400, f"max_tokens must be at most {settings.max_tokens_limit}")
        kwargs = dict(messages=[m.model_dump() for m in req.messages], max_tokens=max_tokens,
                      temperature=req.temperature, top_p=req.top_p, stop=req.stop, seed=req.seed,
                      presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                      logit_bias=req.logit_bias)
        lease = model_lease()
        model = next(lease)  # held until the whole answer, streamed or not, is produced

        def release():
            lease.close()

        if not req.stream:
            try:
                with model.generate_lock:
                    out = model.llm.create_chat_completion(**kwargs)
            finally:
                release()
            out["model"] = model.model_id
            return JSONResponse(out, headers={"x-forge-model-sha256": model.sha256})

        def events():
            try:
                with model.generate_lock:
                    for chunk in model.llm.create_chat_completion(**kwargs, stream=True):
                        chunk["model"] = model.model_id
                        yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                release()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-forge-model-sha256": model.sha256, "cache-control": "no-cache"})

    @app.get("/admin/model-status", dependencies=[Depends(require_admin)])
    def model_status():
        return manager.status()

    @app.post("/admin/reload-model", dependencies=[Depends(require_admin)])
    def reload_model(req: ReloadRequest):
        try:
            return manager.reload(req.model_path, backup=req.backup)
        except ModelPathError as e:
            raise HTTPException(400, str(e)) from None
        except BadModelError as e:
            raise HTTPException(422, str(e)) from None
        except ReloadInProgress as e:
            raise HTTPException(409, str(e)) from None
        except Exception as e:  # noqa: BLE001 - llama.cpp refused to load it in-process
            raise HTTPException(422, f"the model could not be loaded: {str(e)[:200]}") from None

    @app.post("/admin/rollback", dependencies=[Depends(require_admin)])
    def rollback():
        try:
            return {**manager.rollback(), "status": "rolled_back"}
        except BadModelError as e:
            raise HTTPException(409 if "no previous" in str(e) else 422, str(e)) from None
        except ModelPathError as e:
            raise HTTPException(400, str(e)) from None
        except ReloadInProgress as e:
            raise HTTPException(409, str(e)) from None

    return app
