"""`create_app(settings, loader=None, probe=None)`: the FastAPI app (OpenAI-compatible chat over
llama-cpp-python, zero-downtime reload of full or adapter GGUFs, rollback).

The last deployed model is loaded in the lifespan; routes (serving.routes) reach models only through the
manager's leases; every refusal has OpenAI's error shape (serving.errors); serving.guard checks Host,
Origin and body size before any route. `loader(path) -> Llama-like` and `probe(path, lora=None,
timeout_s=...) -> {"ok": ...}` are seams for tests that cannot load real models."""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.deployments import DeploymentHistory
from serving.errors import ServingError, error_response, from_exception
from serving.guard import GuardMiddleware
from serving.llama_log import quiet_native_logs
from serving.model_manager import ModelManager
from serving.probe import probe_gguf
from serving.routes import router
from serving.settings import ServingSettings
from serving.worker import keep_large_buffers_out_of_the_heap


def default_loader(settings: ServingSettings):
    # Prompts are read with as many threads as tokens are generated with (llama-cpp-python's default is every
    # core): on 2 cores under 3 streams, every thread ggml adds for a batch waits at a barrier for one the
    # scheduler took away, and that starved the event loop, the adapter validator and the swap that waits
    # for a token boundary (measured on this machine, 2026-11-25; see bench/serving/bench_swap.py).
    threads = settings.n_threads or max(os.cpu_count() // 2, 1)
    keep_large_buffers_out_of_the_heap(settings.malloc_mmap_threshold)  # before any model or adapter is loaded

    def load(path: Path):
        from llama_cpp import Llama

        quiet_native_logs()
        return Llama(str(path), n_ctx=settings.n_ctx, n_threads=threads,
                     n_threads_batch=settings.n_threads_batch or threads,
                     n_gpu_layers=settings.n_gpu_layers, verbose=False)
    return load


def create_app(settings: Optional[ServingSettings] = None, loader=None, probe=None) -> FastAPI:
    settings = settings or ServingSettings()
    manager = ModelManager(roots=settings.model_roots,
                           history=DeploymentHistory(settings.deployments_path, settings.home_dir),
                           loader=loader or default_loader(settings), probe=probe or probe_gguf,
                           validation_timeout_s=settings.validation_timeout_s,
                           max_queued=settings.max_queued_requests)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(manager.startup, settings.model_path, settings.base_path)
        yield
        await run_in_threadpool(manager.shutdown)

    app = FastAPI(title="forge serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.manager = manager
    app.state.settings = settings
    app.add_middleware(GuardMiddleware, settings=settings)
    app.include_router(router)

    @app.exception_handler(ServingError)
    async def refused(request: Request, exc: ServingError):
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # not JSON, or not UTF-8
            return error_response(400, f"the request body is not valid JSON ({first.get('msg', '')})",
                                  code="invalid_json")
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return error_response(500, "internal server error")  # never a stack trace

    return app
