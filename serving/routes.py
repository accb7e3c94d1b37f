"""The HTTP routes. Chat work goes to the model's generation worker (serving.worker); the event loop only
awaits its events, so /health, /v1/models and /admin/model-status answer at once whatever chat is doing.

- GET  /health                 ready / loading / no_model (503 unless ready)
- GET  /v1/models              live, previous and bare base: id, role, version, sha256, loaded_at
- POST /v1/chat/completions    OpenAI chat (stream or not); `model` may be "base" or "previous"
- GET  /admin/model-status     the live model, its rollback target, queue and warnings
- POST /admin/reload-model     {model_path, base_path?, backup?}: a full GGUF or a LoRA adapter GGUF
- POST /admin/rollback         back to the previous model
"""
from __future__ import annotations

import asyncio
import json

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from serving.deps import get_manager, get_settings, require_admin, require_api
from serving.errors import Busy, ServingError, error_body, error_response, from_exception
from serving.model_manager import ModelManager, NoModelError, ReloadInProgress
from serving.model_paths import BadModelError, ModelPathError
from serving.schemas import ChatRequest, ReloadRequest
from serving.settings import ServingSettings
from serving.worker import Job

router = APIRouter()


def _failure(kind: str, payload) -> JSONResponse:
    if isinstance(payload, ServingError):
        return from_exception(payload)
    return error_response(500, f"generation failed ({type(payload).__name__})", "server_error")


class JobStream(StreamingResponse):
    """A streamed answer whose job is cancelled the moment the client goes, so the model and its lease are
    released at the next token (Starlette does not close an abandoned body iterator by itself)."""

    def __init__(self, content, job: Job, **kw):
        super().__init__(content, **kw)
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            async with anyio.create_task_group() as tg:
                async def stream():
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client went away while we wrote
                    finally:
                        tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            self.job.cancel()


@router.get("/health")
async def health(manager: ModelManager = Depends(get_manager), settings: ServingSettings = Depends(get_settings)):
    live = manager.live
    status = "ready" if manager.state == "ready" and live is not None else manager.state
    body = {"status": status}
    if not settings.protect_api:
        body["model"] = live.model_id if live else None
    return JSONResponse(status_code=200 if status == "ready" else 503, content=body)


@router.get("/v1/models", dependencies=[Depends(require_api)])
async def models(manager: ModelManager = Depends(get_manager)):
    data = [{"id": m.get("model_id"), "object": "model", "created": m.get("loaded_at"), "owned_by": "forge", **m}
            for m in manager.models()]
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", dependencies=[Depends(require_api)])
async def chat(req: ChatRequest, manager: ModelManager = Depends(get_manager),
               settings: ServingSettings = Depends(get_settings)):
    problem = req.text_problem()
    if problem:
        raise ServingError(problem[1], param=problem[0])
    max_tokens = req.max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise ServingError(f"max_tokens must be at most {settings.max_tokens_limit}", param="max_tokens")
    try:
        lease = manager.acquire(req.model)
    except NoModelError as e:
        raise ServingError(str(e), status=503, headers={"Retry-After": "5"}) from None
    kwargs = dict(messages=[m.model_dump() for m in req.messages], max_tokens=max_tokens,
                  temperature=settings.default_temperature if req.temperature is None else req.temperature,
                  top_p=settings.default_top_p if req.top_p is None else req.top_p,
                  repeat_penalty=settings.default_repeat_penalty if req.repeat_penalty is None else req.repeat_penalty,
                  stop=req.stop, seed=req.seed,
                  presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty)
    # the adapter is the lease's when the answer starts (a swap may move a queued request to the new live one)
    job = Job(kwargs, stream=req.stream, adapter=lease.deployment.adapter, logit_bias=req.logit_bias,
              loop=asyncio.get_running_loop(), on_finish=lease.release, on_start=lambda: lease.start().adapter)
    try:
        lease.deployment.base.worker.submit(job)
    except Busy:
        lease.release()
        raise
    try:
        kind, payload = await job.events.get()  # the answer, or the first chunk, or why not
    except BaseException:
        job.cancel()
        raise
    if kind in ("error", "cancelled"):
        return _failure(kind, payload)
    # the job has started (its first event came), so its deployment is fixed from here on
    model_id = lease.model_id
    headers = {"x-forge-model-sha256": (lease.deployment.adapter or lease.deployment.base).sha256,
               "x-forge-model-role": lease.role}
    if not req.stream:
        payload["model"] = model_id
        return JSONResponse(payload, headers=headers)

    async def events():
        k, p = kind, payload
        while True:
            if k == "chunk":
                p["model"] = model_id
                yield f"data: {json.dumps(p)}\n\n"
            elif k == "error":  # mid-stream: an error event, then a proper end
                e = p if isinstance(p, ServingError) else ServingError(
                    f"generation failed ({type(p).__name__})", status=500)
                yield f"data: {json.dumps(error_body(e.message, e.kind, e.code, e.param))}\n\n"
                yield "data: [DONE]\n\n"
                return
            elif k == "done":
                yield "data: [DONE]\n\n"
                return
            else:  # cancelled
                return
            k, p = await job.events.get()

    return JobStream(events(), job, media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})


@router.get("/admin/model-status", dependencies=[Depends(require_admin)])
async def model_status(manager: ModelManager = Depends(get_manager)):
    return manager.status()


def _admin_errors(fn):
    try:
        return fn()
    except ModelPathError as e:
        raise ServingError(str(e), status=400) from None
    except BadModelError as e:
        raise ServingError(str(e), status=409 if "no previous" in str(e) else 422) from None
    except ReloadInProgress as e:
        raise ServingError(str(e), status=409, code="reload_in_progress", headers={"Retry-After": "2"}) from None
    except ServingError:
        raise
    except Exception as e:  # noqa: BLE001 - llama.cpp refused to load it in-process
        raise ServingError(f"the model could not be loaded: {str(e)[:200]}", status=422) from None


@router.post("/admin/reload-model", dependencies=[Depends(require_admin)])
def reload_model(req: ReloadRequest, manager: ModelManager = Depends(get_manager)):
    return _admin_errors(lambda: manager.reload(req.model_path, backup=req.backup, base_path=req.base_path))


@router.post("/admin/rollback", dependencies=[Depends(require_admin)])
def rollback(manager: ModelManager = Depends(get_manager)):
    return {**_admin_errors(manager.rollback), "status": "rolled_back"}
