"""The serving process with a diagnostic route, for bench.serving.swap_rss_diag (never used in production).

    python -m bench.serving.rss_probe --host H --port P [--model PATH]

Runs `python -m serving` with GET /diag added: the process's RssAnon/RssFile, glibc's mallinfo2 (bytes in
use, free but held, mmapped), the LoRA adapters llama.cpp holds now (loaded, not yet freed) with their lease
counts, live Python objects by llama-cpp-python type, the thread count, and (when FORGE_DIAG_TRACEMALLOC=1) the
Python heap traced by tracemalloc. POST /diag/gc runs a full collection + malloc_trim and reports both again."""
from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    mb = 1 / 2**20
    return {"heap_mb": round(m.arena * mb, 1), "in_use_mb": round(m.uordblks * mb, 1),
            "free_held_mb": round(m.fordblks * mb, 1), "mmapped_mb": round(m.hblkhd * mb, 1),
            "mmapped_n": m.hblks}


def status_mb() -> dict:
    out = {}
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        k = line.split(":")[0]
        if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[k] = round(int(line.split()[1]) / 1024, 1)
    return out


ADAPTERS: list = []  # every Adapter the manager made (kept only while its handle is live)


def install() -> None:
    from serving import model_manager as mm

    load = mm.ModelManager._load_adapter

    def tracked(self, *a, **kw):
        ad = load(self, *a, **kw)
        ADAPTERS.append(ad)
        return ad

    mm.ModelManager._load_adapter = tracked

    import serving.app as app_mod

    create = app_mod.create_app

    def create_app(*a, **kw):
        app = create(*a, **kw)
        manager = app.state.manager

        def snapshot() -> dict:
            with manager._lock:
                ADAPTERS[:] = [x for x in ADAPTERS if x.handle is not None]
                live = manager.live.adapter if manager.live else None
                prev = manager.prev.adapter if manager.prev else None
                ads = [{"v": x.version, "leases": x.leases, "retired": x.retired,
                        "role": "live" if x is live else "prev" if x is prev else "retired"} for x in ADAPTERS]
            types: dict = {}
            for o in gc.get_objects():
                t = type(o)
                if str(getattr(t, "__module__", "")).startswith("llama_cpp"):
                    types[t.__name__] = types.get(t.__name__, 0) + 1
            out = {**status_mb(), **mallinfo(), "adapters_resident": len(ads), "adapters": ads,
                   "threads": threading.active_count(), "llama_cpp_objects": types,
                   "gc_count": gc.get_count(), "queued": manager.live.base.worker.queued() if manager.live else 0}
            import tracemalloc

            if tracemalloc.is_tracing():
                out["py_traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            return out

        @app.get("/diag")
        def diag():
            try:
                return snapshot()
            except Exception:  # noqa: BLE001 - a diagnostic: say why
                import traceback

                return {"error": traceback.format_exc()}

        @app.post("/diag/gc")
        def diag_gc():
            before = snapshot()
            n = gc.collect()
            from serving.worker import release_freed_memory

            release_freed_memory()
            return {"before": before, "collected": n, "after": snapshot()}

        @app.get("/diag/top")
        def top(n: int = 15):
            import tracemalloc

            if not tracemalloc.is_tracing():
                return {"error": "FORGE_DIAG_TRACEMALLOC=1 not set"}
            snap = tracemalloc.take_snapshot()
            stats = snap.statistics("lineno")[:n]
            return {"top": [[str(s.traceback), round(s.size / 2**20, 3), s.count] for s in stats]}

        return app

    app_mod.create_app = create_app


def main() -> int:
    if os.environ.get("FORGE_DIAG_TRACEMALLOC") == "1":
        import tracemalloc

        tracemalloc.start(5)
    install()
    from serving.__main__ import main as serve

    return serve(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
