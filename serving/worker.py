"""One generation thread per loaded llama.cpp context: the only thread that ever touches it.

Why (issue 11, items 1-2): a llama.cpp context is single-threaded. Guarding it with a lock taken by request
threads meant a stream abandoned by its client kept the lock until the garbage collector closed its
generator (minutes, or never), and 41 waiting streams took all of anyio's 40 threadpool threads so the
stream holding the lock could not get one for its next chunk: every route hung for good. Here requests are
jobs in a bounded queue; the event loop only awaits an asyncio queue the worker feeds, so no pool thread
ever waits on the model, /health stays instant, and a job whose client left is cancelled at the next token.

Between two tokens the worker also runs "control" calls (loading or freeing a LoRA adapter on the model):
llama.cpp's model keeps a set of its adapters that a decode reads, so they are changed only on this thread,
without waiting for a long answer to finish.
"""
from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Optional

from serving.errors import Busy, ContextOverflow

_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


class Cancelled(Exception):
    """The client went away; raised inside llama.cpp's sampling loop to stop generating."""


# glibc's malloc.h: mallopt's parameter for the size from which a request is served by its own mmap
M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc (its malloc tunables below), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_large_buffers_out_of_the_heap(threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (ServingSettings.malloc_mmap_threshold, 2 MiB), so that
    every buffer of that size or more (a LoRA adapter's tensors: 14.5 MB for the embedded Gemma at r16) gets its
    own mapping and goes back to the OS when freed.

    Why: by default glibc raises the threshold to the size of each mapped block freed (up to 32 MB), so once
    the first adapter was freed the next ones came from the heap, and under streaming load their freed buffers
    stayed there, resident: 64-73 MB free but held, single RSS samples after a swap 1.10-1.12x the first
    adapter's (bench.serving.swap_rss_diag, bench/results/serving_swap_rss.json "session11"). Why 2 MiB and not
    1: the embedded Gemma's per-token logits array (262,144 floats) is exactly 1 MiB, and at 1 MiB each token
    mapped and unmapped one (measured with strace, a second reader). Setting the threshold also turns glibc's
    dynamic adjustment off (mallopt(3)), so the trim threshold stays at 128 KiB: the heap then shrinks and grows
    around that per-token array (brk calls 279 -> 619 over 448 tokens, 5 ms of system time in all); a trim
    threshold of 4 MiB removed them but held more (highest sample 1.090-1.097x against 1.083-1.085x), so it is
    left alone. A threshold the user set for glibc (MALLOC_MMAP_THRESHOLD_, or
    glibc.malloc.mmap_threshold in GLIBC_TUNABLES) is left alone, as is a threshold of 0; on another C library
    this does nothing. Call it before threads start allocating. Returns whether the threshold was set."""
    if threshold <= 0 or _glibc() is None or os.environ.get("MALLOC_MMAP_THRESHOLD_") \
            or "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return bool(_glibc().mallopt(M_MMAP_THRESHOLD, threshold))


def release_freed_memory() -> None:
    """glibc keeps freed llama.cpp buffers in its arenas; hand them back so RSS returns to its baseline."""
    if _glibc() is not None:  # elsewhere: nothing to trim
        _glibc().malloc_trim(0)


def close_answer_sampler(llm: Any) -> None:
    """Free the last completion's native sampler chain now. llama-cpp-python 0.3.36 builds one per completion
    and, at the next, drops the old one into a reference cycle (its close callback holds it), so its memory (a
    token array of n_vocab x 12 bytes: 3 MB for the embedded Gemma, 1.5 MB for Llama 3) waited for Python's
    full collection. Measured with bare llama-cpp-python over 150 streamed answers: anonymous RSS +63 MB
    (+129 MB without a logit bias); closed after each answer and trimmed, flat, the trim taking 0.3 ms median
    (bench/results/serving_swap_rss.json). Call it on the thread that owns ``llm``."""
    sampler = getattr(llm, "_sampler", None)
    if sampler is None:
        return
    llm._sampler = None  # generate() makes a new one; sample() alone makes and drops its own
    sampler.close()
    release_freed_memory()


class Job:
    """One chat completion. Events reach the event loop as ("chunk"|"done"|"error"|"cancelled", payload).

    `on_start`, when given, runs on the worker thread as the answer begins and returns the adapter to answer
    with (the request's lease is pinned then: serving.model_manager moves queued ones to a new live adapter)."""

    def __init__(self, kwargs: dict, *, stream: bool, adapter: Any, logit_bias: Optional[dict],
                 loop: asyncio.AbstractEventLoop, on_finish: Callable[[], None],
                 on_start: Optional[Callable[[], Any]] = None):
        self.kwargs, self.stream, self.adapter, self.logit_bias = kwargs, stream, adapter, logit_bias
        self.events: asyncio.Queue = asyncio.Queue()
        self._loop = loop
        self._on_finish = on_finish
        self._on_start = on_start
        self._cancel = threading.Event()
        self._finished = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def begin(self) -> Any:
        """The answer starts now: the adapter it comes from."""
        if self._on_start is not None:
            self.adapter = self._on_start()
        return self.adapter

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def emit(self, kind: str, payload: Any = None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:
            pass  # the event loop is gone (server shutting down)

    def finish(self) -> None:
        if not self._finished.is_set():
            self._finished.set()
            self._on_finish()


class GenerationWorker:
    """Owns `llm`: runs jobs one at a time, applies each job's adapter, and closes the model at shutdown."""

    def __init__(self, llm: Any, name: str, max_queued: int):
        self.llm = llm
        self.max_queued = max_queued
        self._jobs: deque[Job] = deque()
        self._controls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._applied: Any = None  # the adapter handle set on the context now (None: the bare base)
        self.running: Optional[Job] = None
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)
        self._thread.start()

    # ---- called from other threads --------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise Busy("this model is being unloaded; retry", status=503, headers={"Retry-After": "1"})
            waiting = sum(not j.cancelled for j in self._jobs)
            if waiting >= self.max_queued:
                raise Busy(f"the server is busy: {waiting} requests are already waiting for the model; retry "
                           "later", code="server_busy", headers={"Retry-After": str(max(1, waiting // 4))})
            self._jobs.append(job)
            self._cond.notify()

    def call(self, fn: Callable[[], Any], timeout: Optional[float] = None) -> Any:
        """Run `fn` on the worker thread (between two tokens at most) and return its result."""
        return self.post(fn).result(timeout)

    def post(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the worker thread soon, without waiting for it (errors go to the returned future only)."""
        fut: Future = Future()
        if threading.current_thread() is self._thread:
            try:
                fut.set_result(fn())
            except Exception as e:  # noqa: BLE001 - handed to whoever looks at the future
                fut.set_exception(e)
            return fut
        with self._cond:
            if self._stopping and not self._thread.is_alive():  # nobody will run it: say so now
                fut.set_exception(RuntimeError("the model's worker has stopped"))
                return fut
            self._controls.append((fn, fut))
            self._cond.notify()
        return fut

    def queued(self) -> int:
        with self._cond:
            return sum(not j.cancelled for j in self._jobs)

    def stop(self, join: bool = True) -> None:
        """Finish queued work, then free the model on the worker thread (joins unless called from it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if join and threading.current_thread() is not self._thread:
            self._thread.join(timeout=120)

    # ---- the worker thread ----------------------------------------------------------------------------
    def _run_controls(self) -> None:
        while True:
            with self._cond:
                if not self._controls:
                    return
                fn, fut = self._controls.popleft()
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._jobs or self._controls or self._stopping):
                    self._cond.wait()
                if self._controls:
                    job = None
                elif self._jobs:
                    job = self._jobs.popleft()
                else:
                    break  # stopping, and nothing left to do
            self._run_controls()
            if job is not None:
                self._execute(job)
        self._close()

    def _close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close:
            close()
        self.llm = None
        release_freed_memory()

    def set_adapter(self, adapter: Any) -> None:
        """Apply `adapter` (an object with .handle and .scale, or None for the bare base) to the context.
        On a change the KV cache is cleared: its keys and values were computed under the old weights, and
        llama-cpp-python would otherwise reuse a matching prompt prefix (vLLM's stale-prefix bug)."""
        handle = adapter.handle if adapter is not None else None
        if handle == self._applied:
            return
        import llama_cpp

        ctx = self.llm.ctx
        if handle is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(adapter.scale)
            rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, scales)
        if rc != 0:
            raise RuntimeError(f"llama.cpp refused to set the adapter (code {rc})")
        self._applied = handle
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        if getattr(self.llm, "cache", None) is not None:
            self.llm.set_cache(None)

    def forget_adapter(self, handle: Any) -> None:
        """Before an adapter is freed: make sure the context no longer points at it."""
        if handle is not None and handle == self._applied:
            self.set_adapter(None)

    def _execute(self, job: Job) -> None:
        self.running = job
        try:
            if job.cancelled:
                job.emit("cancelled")
                return
            self.set_adapter(job.begin())
            self._generate(job)
        except Cancelled:
            job.emit("cancelled")
        except ValueError as e:
            m = _OVERFLOW.search(str(e))
            job.emit("error", ContextOverflow(int(m.group(2)), int(m.group(1))) if m else e)
        except Exception as e:  # noqa: BLE001 - reported to the request, the worker goes on
            job.emit("error", e)
        finally:
            self.running = None
            try:
                close_answer_sampler(self.llm)
            except Exception:  # noqa: BLE001 - memory housekeeping must never stop the worker or keep a lease
                pass
            job.finish()

    def _generate(self, job: Job) -> None:
        import numpy as np
        from llama_cpp import LogitsProcessorList

        eos = self.llm.token_eos()
        ids = np.array(list(job.logit_bias or {}), dtype=np.int64)
        vals = np.array(list((job.logit_bias or {}).values()), dtype=np.float32)

        def per_token(input_ids, scores):
            # llama-cpp-python calls its logits processors once per sampled token: the moment to run an
            # adapter load without waiting for the whole answer, and to honour a cancel. They run inside a
            # ctypes callback, where an exception is printed and swallowed, so a cancel forces the
            # end-of-sequence token instead. Checking only between streamed chunks was not enough: chunks are
            # held back while the bytes of a multi-byte character or a possible stop sequence accumulate
            # (measured: a dropped stream ran on for 11 s). logit_bias is applied here too, because
            # llama-cpp-python 0.3.36 drops its own bias processor next to another one.
            self._run_controls()
            if job.cancelled and 0 <= eos < scores.shape[-1]:
                scores[:] = -1e30
                scores[eos] = 0.0
                return scores
            if len(ids):
                keep = ids < scores.shape[-1]
                scores[ids[keep]] += vals[keep]
            return scores

        kwargs = {**job.kwargs, "logits_processor": LogitsProcessorList([per_token])}
        if not job.stream:
            out = self.llm.create_chat_completion(**kwargs)
            if job.cancelled:
                raise Cancelled()
            job.emit("done", out)
            return
        chunks = self.llm.create_chat_completion(**kwargs, stream=True)
        try:
            for chunk in chunks:
                if job.cancelled:
                    raise Cancelled()
                job.emit("chunk", chunk)
        finally:
            chunks.close()
        if job.cancelled:
            raise Cancelled()
        job.emit("done")
