"""The models a server holds, swapped without dropping or mixing a request.

A *base* is one llama.cpp model + context with its generation worker (serving.worker). A *deployment* is a
base with at most one LoRA adapter on it. Each request leases a deployment for its whole life (a streamed
answer included): its job carries that base, and the worker applies the lease's adapter when the job starts,
so an answer comes wholly from one model even when a swap lands mid-stream. A request that names no model
follows the live one until its answer starts: an adapter swap moves its lease, while it waits in the queue,
onto the new live deployment (same base); from its first token it stays where it is. A full-GGUF reload
validates the file in a probe process, loads it and swaps the pointer; an adapter reload checks the
adapter was made for the loaded base (`forge.base_gguf_sha256`), validates base + adapter in a probe
process, loads the adapter on the resident base between two tokens and swaps the pointer (no base load).
Retired bases and adapters are freed when their last lease ends. Reloads are serialized: a second one
while one runs is refused (409), never interleaved. On any failure the old model keeps serving.

(About 450 lines in one module on purpose: lease counts, swaps and the order in which adapters and bases are
freed share one lock, and are only checkable when read together.)
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from serving.deployments import DeploymentHistory
from serving.errors import ServingError
from serving.files import sha256_file
from serving.gguf_header import GGUFHeaderError, read_gguf_header
from serving.model_paths import BadModelError, ModelPathError, check_gguf_header, resolve_model_path
from serving.probe import ResidentValidator, probe_gguf
from serving.worker import GenerationWorker, release_freed_memory


class ReloadInProgress(RuntimeError):
    """Another reload is running (HTTP 409)."""


class NoModelError(RuntimeError):
    """No model is loaded (HTTP 503)."""


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _identity(path: Path) -> tuple:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def version_of(path: Path) -> str:
    # models/<version>/<name>.gguf, else the file's stem
    return path.parent.name if path.parent.parent.name == "models" else path.stem


@dataclass(eq=False, kw_only=True)
class Loaded:
    """A file llama.cpp holds for us (a base model or an adapter), leased by the requests that use it."""
    path: Path
    sha256: str
    size_mb: float
    loaded_at: float
    leases: int = 0
    retired: bool = False  # no longer live nor previous: freed when its last lease ends

    @property
    def version(self) -> str:
        return version_of(self.path)

    @property
    def unused(self) -> bool:
        return self.retired and self.leases == 0


@dataclass(eq=False, kw_only=True)
class Base(Loaded):
    llm: object
    worker: GenerationWorker
    architecture: Optional[str] = None
    validator: Optional[ResidentValidator] = None


@dataclass(eq=False, kw_only=True)
class Adapter(Loaded):
    handle: object
    base: Base
    scale: float = 1.0


@dataclass(eq=False)
class Deployment:
    base: Base
    adapter: Optional[Adapter] = None
    requests_served: int = 0
    created: float = field(default_factory=time.time)

    def parts(self) -> list[Loaded]:
        return [self.base, self.adapter] if self.adapter else [self.base]

    def lease(self, n: int) -> None:
        """Count `n` (+1 or -1) more requests on the base and the adapter; caller holds the manager's lock."""
        for part in self.parts():
            part.leases += n

    @property
    def model_id(self) -> str:
        top = self.adapter or self.base
        return f"{top.version}:{top.sha256[:12]}"

    def describe(self) -> str:
        """For the log: what answers, e.g. `adapter v3 (…/adapter.gguf) on base gemma.gguf`."""
        if self.adapter:
            return f"adapter {self.adapter.version} ({self.adapter.path}) on base {self.base.path.name}"
        return f"{self.base.path} (full model {self.base.version})"

    def info(self) -> dict:
        top = self.adapter or self.base
        out = {"kind": "adapter" if self.adapter else "full", "path": str(top.path), "version": top.version,
               "sha256": top.sha256, "size_mb": top.size_mb, "loaded_at": _iso(top.loaded_at),
               "requests_served": self.requests_served, "model_id": self.model_id}
        if self.adapter:
            out.update(base_path=str(self.base.path), base_sha256=self.base.sha256, base_version=self.base.version)
        return out


class Lease:
    """A request's hold on one deployment; `release()` is idempotent and may run on any thread.

    A `follow` lease (a request for the live model that did not name the live one's id: no model, "live", a
    client's placeholder) is moved by each adapter swap onto the new live deployment until `start()`; read
    `deployment`/`model_id` only after the job started. A request naming "base", "previous" or a model's id
    keeps it, and so keeps that adapter resident while it waits."""

    def __init__(self, manager: ModelManager, deployment: Deployment, role: str, follow: bool = False):
        self.manager, self.deployment, self.role, self.follow = manager, deployment, role, follow
        self._released = False
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.deployment.model_id

    def start(self) -> Deployment:
        """The answer begins (on its base's worker thread): pin the deployment it will come from."""
        return self.manager._start(self)

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.manager._release(self)


class ModelManager:
    def __init__(self, *, roots: list[Path], history: DeploymentHistory, loader: Callable[[Path], object],
                 validation_timeout_s: float = 180, max_queued: int = 32, probe: Callable[..., dict] = probe_gguf,
                 log: Callable[[str], None] = print):
        self.roots = roots
        self.history = history
        self._loader = loader
        self._probe = probe
        self._timeout = validation_timeout_s
        self._max_queued = max_queued
        self._log = log
        self._lock = threading.Lock()  # guards live/prev and lease counts
        self._reload_lock = threading.Lock()
        self.live: Optional[Deployment] = None
        self.prev: Optional[Deployment] = None  # the previous deployment while it is resident (same base)
        self.previous: Optional[dict] = None  # what a rollback goes back to
        self.state = "no_model"
        self.timings: dict = {}  # of the last reload's stages, in seconds
        # (adapter sha256, base sha256) pairs that passed validation: the same bytes on the same base pass the
        # same checks, so re-deploying a known adapter (a rollback by path, a re-sent nightly) skips the child
        self._validated: dict[tuple[str, str], None] = {}
        # follow leases whose answer has not started (queued): a swap moves them onto the new live deployment.
        # Why: each used to keep the adapter that was live when it arrived. Under 3 streaming clients (each
        # answer waits ~3 s in the queue, swaps every ~0.35 s) up to 3 retired adapters stayed resident beside
        # the live and previous ones, 14.5 MB each for the embedded Gemma: all of the "unexplained" RSS growth
        # of 50 swaps under load (RssAnon tracked the adapter count to within 2-4 MB after every swap;
        # bench.serving.swap_rss_diag, bench/results/serving_swap_rss.json "session9").
        self._waiting: set[Lease] = set()
        # how long a reload waits for the adapters it retired to be freed (a token boundary away: ~30 ms measured)
        # before it answers anyway; short, since it holds the reload lock and a long prompt has no boundary
        self._free_wait_s = 1.0

    # ---- requests ------------------------------------------------------------------------------------
    def acquire(self, which: Optional[str] = None) -> Lease:
        """Lease the deployment a request names: None/unknown -> live, "base" -> the bare base, "previous"."""
        with self._lock:
            live = self.live
            if live is None:
                raise NoModelError("no model is loaded; POST /admin/reload-model with a GGUF path")
            if which == "base" or (live.adapter and which == self._bare(live.base).model_id):
                dep, role = self._bare(live.base), "base"
            elif which == "previous" or (self.prev is not None and which == self.prev.model_id):
                if self.prev is None:
                    why = ("no previous model" if not self.previous else
                           f"the previous model ({self.previous.get('model_id')}) is not resident (it needs "
                           "another base); POST /admin/rollback to serve it")
                    raise ServingError(why, status=404, code="model_not_found", param="model")
                dep, role = self.prev, "previous"
            else:
                dep, role = live, "live"
            dep.lease(+1)
            dep.requests_served += 1
            # a request that named the live model's own id keeps it; any other (no model, "live", a client's
            # placeholder name) gets whatever is live when its answer starts
            lease = Lease(self, dep, role, follow=role == "live" and which != live.model_id)
            if lease.follow:
                self._waiting.add(lease)
        return lease

    def _start(self, lease: Lease) -> Deployment:
        with self._lock:
            self._waiting.discard(lease)
            return lease.deployment

    def _move_waiting(self, new: Deployment) -> None:
        """Move the follow leases not yet started onto `new` (same base: their jobs sit in its worker's queue).
        Caller holds the lock, before it works out which adapters the swap retires."""
        for lease in self._waiting:
            dep = lease.deployment
            if dep is new or dep.base is not new.base:
                continue  # a job queued on another base's worker stays there (a full-GGUF reload)
            dep.lease(-1)
            dep.requests_served -= 1
            new.lease(+1)
            new.requests_served += 1
            lease.deployment = new

    def _bare(self, base: Base) -> Deployment:
        bare = getattr(base, "_bare", None)
        if bare is None:
            bare = base._bare = Deployment(base, None, created=base.loaded_at)
        return bare

    def _release(self, lease: Lease) -> None:
        with self._lock:
            self._waiting.discard(lease)
            dep = lease.deployment
            dep.lease(-1)
            free = [dep.adapter] if dep.adapter and dep.adapter.unused else []
            close = [dep.base] if dep.base.unused else []
        self._dispose(free, close)

    # ---- freeing -------------------------------------------------------------------------------------
    def _dispose(self, adapters: list[Adapter], bases: list[Base]) -> list[Future]:
        """Free adapters, then close bases, each on its base's worker thread (never while it generates).
        Returns the adapters' frees, done at the worker's next token boundary."""
        frees = [a.base.worker.post(lambda a=a: self._free_adapter_now(a)) for a in adapters]
        for f in frees:  # nobody else reads a free's outcome: a failure goes to the log, not nowhere
            f.add_done_callback(lambda f: f.exception() and self._log(f"could not free an adapter: {f.exception()}"))
        for b in bases:
            b.worker.stop(join=False)
            if b.validator is not None:
                b.validator.close()
        return frees

    @staticmethod
    def _free_adapter_now(a: Adapter) -> None:
        if a.handle is None:
            return
        import llama_cpp

        a.base.worker.forget_adapter(a.handle)
        llama_cpp.llama_adapter_lora_free(a.handle)
        a.handle = None
        release_freed_memory()

    # ---- loading -------------------------------------------------------------------------------------
    def _load_base(self, path: Path) -> Base:
        check_gguf_header(path)
        probe = self._probe(path, timeout_s=self._timeout)
        if not probe.get("ok"):
            raise BadModelError(f"{path.name} failed validation: {probe.get('error')}")
        llm = self._loader(path)
        worker = GenerationWorker(llm, version_of(path), self._max_queued)
        arch = (getattr(llm, "metadata", None) or {}).get("general.architecture")
        validator = None
        if self._probe is probe_gguf:  # real models: adapters are checked on a resident copy of this base
            validator = ResidentValidator(path)
            threading.Thread(target=validator.start, args=(self._timeout,), daemon=True).start()
        return Base(llm=llm, path=path, sha256=sha256_file(path), size_mb=round(path.stat().st_size / 2**20, 2),
                    loaded_at=time.time(), worker=worker, architecture=arch, validator=validator)

    def _load_adapter(self, path: Path, header, base: Base) -> Adapter:
        meta = header.metadata
        if meta.get("adapter.type", "lora") != "lora":
            raise BadModelError(f"{path.name}: adapter.type {meta.get('adapter.type')!r} is not supported (lora only)")
        wanted = meta.get("forge.base_gguf_sha256")
        if not wanted:
            raise BadModelError(f"{path.name}: the adapter does not say which base it was made for (no "
                                "forge.base_gguf_sha256 in its metadata); export it with `forge export`")
        if wanted != base.sha256:
            raise BadModelError(f"{path.name} was made for the base GGUF with sha256 {wanted[:12]}…, but the "
                                f"loaded base {base.path.name} has sha256 {base.sha256[:12]}…; load that base "
                                "(base_path) or export the adapter against this one")
        arch = meta.get("general.architecture")
        if base.architecture and arch and arch != base.architecture:
            raise BadModelError(f"{path.name} is for architecture {arch!r}; the base is {base.architecture!r}")
        if header.truncation():
            raise BadModelError(f"{path.name}: {header.truncation()}")
        t = time.perf_counter()
        before = _identity(path)
        sha = sha256_file(path)
        self.timings["hash_s"] = round(time.perf_counter() - t, 3)
        key = (sha, base.sha256)
        if key in self._validated:
            self.timings["validation"] = "known"  # same bytes on the same base passed these checks before
        else:
            t = time.perf_counter()
            probe = (base.validator.check(path, self._timeout) if base.validator is not None
                     else self._probe(base.path, lora=path, timeout_s=self._timeout))
            self.timings["validate_s"] = round(time.perf_counter() - t, 3)
            self.timings["validation"] = "checked"
            if not probe.get("ok"):
                raise BadModelError(f"{path.name} failed validation on {base.path.name}: {probe.get('error')}")

        def init():
            import llama_cpp

            return llama_cpp.llama_adapter_lora_init(base.llm.model, str(path).encode())

        t = time.perf_counter()
        handle = base.worker.call(init, timeout=self._timeout)
        self.timings["load_s"] = round(time.perf_counter() - t, 3)
        if not handle:
            raise BadModelError(f"llama.cpp refused the adapter {path.name} (see the server log)")
        adapter = Adapter(handle=handle, path=path, sha256=sha, size_mb=round(before[1] / 2**20, 2),
                          loaded_at=time.time(), base=base)
        if _identity(path) != before:  # replaced or rewritten while we hashed, checked and loaded it
            self._dispose([adapter], [])
            raise BadModelError(f"{path.name} changed while it was being loaded; nothing was swapped, send it again")
        self._validated[key] = None
        while len(self._validated) > 256:
            self._validated.pop(next(iter(self._validated)))
        return adapter

    def _swap(self, new: Deployment, backup: bool, event: str, previous: Optional[dict] = None,
              keep_previous: bool = False) -> Optional[Deployment]:
        with self._lock:
            self._move_waiting(new)
            old, old_prev = self.live, self.prev
            self.live, self.state = new, "ready"
            self.prev = old if backup and old is not None and old.base is new.base else None
            if not keep_previous:
                self.previous = old.info() if backup and old is not None else None
            else:
                self.previous = previous
            keep = {id(x) for x in (new.adapter, self.prev.adapter if self.prev else None) if x is not None}
            free, close = [], []
            for d in (old, old_prev):
                if d is None:
                    continue
                if d.adapter is not None and id(d.adapter) not in keep and not d.adapter.retired:
                    d.adapter.retired = True
                    free += [d.adapter] if d.adapter.unused else []
                if d.base is not new.base and not d.base.retired:
                    d.base.retired = True
                    close += [d.base] if d.base.unused else []
        frees = self._dispose(free, close)
        self.history.record(new.info(), self.previous, event)
        # Wait (bounded) for the adapters this swap retired to be freed at the worker's next token boundary,
        # so that when a reload returns its memory is back: under 3 streaming clients the free landed ~30 ms
        # after the reply (the adapter load's own wait for a token boundary: 33 ms median), and RSS read then
        # held one 14.5 MB adapter more than the live, previous and still-streaming ones (bench_swap's trace:
        # 447-474 MB, 1.127x; bench/results/serving_swap_rss.json "session9"). A worker busy with a long prompt
        # only delays the reply up to the bound; the free still happens when it gets there.
        t, deadline = time.perf_counter(), time.monotonic() + self._free_wait_s
        for f in frees:
            try:
                f.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout or a failed free must not fail a swap that happened
                pass
        if frees:
            self.timings["free_s"] = round(time.perf_counter() - t, 3)
        return old

    def reload(self, raw_path: str, backup: bool = True, base_path: Optional[str] = None, event: str = "reload",
               trusted: bool = False, previous: Optional[dict] = None, keep_previous: bool = False) -> dict:
        """Load a full GGUF (swaps the base) or an adapter GGUF (on the loaded base, or on `base_path`).
        ModelPathError (400) before anything is opened; `trusted` only for paths the server recorded itself
        or the operator's start-up setting, never for a request's path."""
        path = resolve_model_path(raw_path, self.roots, anywhere=trusted)
        base_file = resolve_model_path(base_path, self.roots, anywhere=trusted) if base_path else None
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadInProgress("another reload is in progress; try again when it finishes")
        try:
            if self.live is None:
                self.state = "loading"
            self.timings = {}
            t = time.perf_counter()
            try:
                new = self._prepare(path, base_file)
            except BaseException:
                if self.live is None:
                    self.state = "no_model"
                raise
            t_swap = time.perf_counter()
            old = self._swap(new, backup, event, previous, keep_previous)
            self.timings["swap_s"] = round(time.perf_counter() - t_swap - self.timings.get("free_s", 0), 3)
            self.timings["total_s"] = round(time.perf_counter() - t, 3)
            return {"status": "reloaded", "model": new.info(), "previous": self.previous,
                    "swapped_from": old.model_id if old else None, "timings": dict(self.timings)}
        finally:
            self._reload_lock.release()

    def _prepare(self, path: Path, base_file: Optional[Path]) -> Deployment:
        check_gguf_header(path)
        try:
            header = read_gguf_header(path)
        except (GGUFHeaderError, OSError) as e:
            raise BadModelError(f"{path.name}: {e}") from None
        if header.kind != "adapter":
            if base_file is not None:
                raise ModelPathError("base_path goes only with an adapter GGUF; model_path is a full model")
            return Deployment(self._load_base(path))
        live = self.live
        if base_file is None and live is None:
            raise ModelPathError(f"{path.name} is an adapter and no base is loaded: give base_path too")
        new_base = None
        if base_file is not None and (live is None or base_file != live.base.path):
            new_base = self._load_base(base_file)
        base = new_base or live.base
        try:
            return Deployment(base, self._load_adapter(path, header, base))
        except BaseException:
            if new_base is not None:
                new_base.retired = True
                self._dispose([], [new_base])
            raise

    def rollback(self) -> dict:
        if not self.previous:
            raise BadModelError("no previous model to roll back to (the last reload used --no-backup, or none happened)")
        with self._lock:
            resident = self.prev
        if resident is not None:  # the previous adapter is still on the live base: a pointer swap
            if not self._reload_lock.acquire(blocking=False):
                raise ReloadInProgress("another reload is in progress; try again when it finishes")
            try:
                if self.prev is resident:
                    self.timings = {}
                    self._swap(resident, True, "rollback")
                    return {"status": "reloaded", "model": resident.info(), "previous": self.previous}
            finally:
                self._reload_lock.release()
        p = self.previous
        return self.reload(p["path"], backup=True, base_path=p.get("base_path"), event="rollback", trusted=True)

    def startup(self, configured: Optional[Path], configured_base: Optional[Path] = None) -> None:
        """Come back on the last deployed model (keeping its rollback target); else its predecessor; else the
        configured path (an adapter goes on ``configured_base``); else none."""
        record = self.history.read()
        for w in self.history.warnings:
            self._log(f"WARNING: {w}")
        cur, prev = record.get("current"), record.get("previous")
        # Each candidate is a list of loads. A configured adapter goes on after its bare base, as when one is
        # deployed onto a running base: the bare base is then its rollback target (`forge rollback` says so).
        configured_loads = [(configured_base, None)] * bool(configured_base) + [(configured, None)]
        candidates = [([(cur.get("path"), cur.get("base_path"))] if cur else [], prev),
                      ([(prev.get("path"), prev.get("base_path"))] if prev else [], None),
                      (configured_loads if configured else [], None)]
        for loads, keep in candidates:
            for i, (path, base_path) in enumerate(loads):
                if not path:
                    break
                try:  # the first load keeps the record's rollback target; the next backs up the one before
                    self.reload(str(path), base_path=base_path, event="startup", trusted=True, previous=keep,
                                keep_previous=i == 0)
                except (ValueError, RuntimeError, OSError) as e:
                    self._log(f"could not load {path}: {e}")
                    break
            if self.live is not None:
                self._log(f"serving {self.live.describe()}")
                return
        self.state = "no_model"
        self._log("no model loaded: /health reports no_model until POST /admin/reload-model")

    # ---- reporting -----------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            live, prev = self.live, self.prev
            info = live.info() if live else {"model": None}
            active = live.base.leases if live else 0
        out = {**info, "state": self.state, "previous": self.previous, "previous_resident": prev is not None,
               "active_requests": active, "queued_requests": live.base.worker.queued() if live else 0,
               "warnings": list(self.history.warnings)}
        rolled_back_from = self.history.rolled_back_from()
        if rolled_back_from:
            out["rolled_back_from"] = rolled_back_from
        if live and live.adapter:
            out["base"] = self._bare(live.base).info()
        return out

    def models(self) -> list[dict]:
        """Live, previous and bare base, each with role, version, sha256, loaded_at (for /v1/models)."""
        with self._lock:
            live, prev, previous = self.live, self.prev, self.previous
        rows = []
        if live:
            rows.append({**live.info(), "role": "live", "resident": True})
            if live.adapter:
                rows.append({**self._bare(live.base).info(), "role": "base", "resident": True})
        if prev:
            rows.append({**prev.info(), "role": "previous", "resident": True})
        elif previous:
            rows.append({**previous, "role": "previous", "resident": False})
        return rows

    def shutdown(self) -> None:
        with self._lock:
            bases = {id(d.base): d.base for d in (self.live, self.prev) if d is not None}
            self.live = self.prev = None
        for b in bases.values():
            b.worker.stop(join=True)
            if b.validator is not None:
                b.validator.close()
