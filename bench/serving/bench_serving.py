"""Serving benchmark on one GGUF, in one run; writes bench/results/serving.json.

    .venv/bin/python -m bench.serving.bench_serving GGUF [--reloads 50]

- generation tokens/s through the API (greedy; non-streaming and streaming) vs raw llama-cpp-python on the
  same file, same prompt, same thread count (target: API at least 0.95x raw). End-of-turn tokens get a
  -100 logit bias on both sides so every request generates exactly TOKENS tokens, and API and raw requests
  alternate (order flipped each round) so the drift of a shared 2-core VM hits both alike;
- reload latency (probe process + load + swap), median and max;
- resident memory of the server after N reloads vs after the first load (target: within 10%).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "serving.json"
MSG = [{"role": "user", "content": "Write a few sentences about what you learned this week."}]
TOKENS = 96


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def end_tokens(llm) -> dict[int, float]:
    """-100 on every end-of-turn token, so generation runs to max_tokens."""
    ids = {llm.token_eos()}
    for text in (b"<end_of_turn>", b"<|eot_id|>", b"<|im_end|>", b"<eos>"):
        pieces = llm.tokenize(text, add_bos=False, special=True)
        if len(pieces) == 1:
            ids.add(pieces[0])
    return {i: -100.0 for i in ids if i >= 0}


def timed_raw(llm, bias: dict[int, float]) -> float:
    t = time.perf_counter()
    r = llm.create_chat_completion(messages=MSG, max_tokens=TOKENS, temperature=0.0, logit_bias=bias)
    assert r["usage"]["completion_tokens"] == TOKENS
    return TOKENS / (time.perf_counter() - t)


def timed_api(url: str, bias: dict[int, float], stream: bool) -> float:
    body = {"messages": MSG, "max_tokens": TOKENS, "temperature": 0, "stream": stream,
            "logit_bias": {str(k): v for k, v in bias.items()}}
    t = time.perf_counter()
    if not stream:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600).json()
        assert r["usage"]["completion_tokens"] == TOKENS, r
    else:
        chunks = 0
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    chunks += 1
        assert chunks >= TOKENS * 0.9, chunks  # a token may hold no text; most do
    return TOKENS / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    threads = os.cpu_count() or 2
    home = Path(tempfile.mkdtemp(prefix="forge-serve-bench-"))
    model = home / "models" / "v1" / args.gguf.name
    model.parent.mkdir(parents=True)
    shutil.copy2(args.gguf, model)
    import socket

    with socket.socket() as sock:  # a free port: never talk to some other server by accident
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FORGE_HOME": str(home), "FORGE_N_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--model", str(model)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        from llama_cpp import Llama

        llm = Llama(str(model), n_ctx=2048, n_threads=threads, verbose=False)
        bias = end_tokens(llm)
        timed_raw(llm, bias), timed_api(url, bias, False)  # warm both
        measure = {"raw": lambda: timed_raw(llm, bias), "api": lambda: timed_api(url, bias, False),
                   "api_stream": lambda: timed_api(url, bias, True)}
        speeds = {k: [] for k in measure}
        for i in range(args.runs):
            for k in (list(measure) if i % 2 == 0 else list(reversed(measure))):
                speeds[k].append(measure[k]())
        llm.close()
        api, raw, stream = speeds["api"], speeds["raw"], speeds["api_stream"]
        baseline = rss_mb(proc.pid)
        latencies = []
        for _ in range(args.reloads):
            t = time.perf_counter()
            r = httpx.post(url + "/admin/reload-model", json={"model_path": str(model)}, timeout=600)
            assert r.status_code == 200, r.text
            latencies.append(time.perf_counter() - t)
        httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 8}, timeout=600)
        after = rss_mb(proc.pid)
        result = {
            "gguf": args.gguf.name, "size_mb": round(model.stat().st_size / 2**20, 1), "threads": threads,
            "tokens_per_request": TOKENS, "api_tokens_per_s_median": round(statistics.median(api), 2),
            "raw_tokens_per_s_median": round(statistics.median(raw), 2),
            "api_stream_tokens_per_s_median": round(statistics.median(stream), 2),
            "api_vs_raw": round(statistics.median(api) / statistics.median(raw), 3),
            "api_stream_vs_raw": round(statistics.median(stream) / statistics.median(raw), 3),
            "api_vs_raw_pairwise_median": round(statistics.median(a / r for a, r in zip(api, raw)), 3),
            "api_vs_raw_target": 0.95, "speed_rounds": args.runs,
            "reloads": args.reloads, "reload_latency_s_median": round(statistics.median(latencies), 2),
            "reload_latency_s_max": round(max(latencies), 2),
            "rss_mb_after_first_load": round(baseline, 1), "rss_mb_after_reloads": round(after, 1),
            "rss_ratio": round(after / baseline, 3), "rss_ratio_target": 1.10,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
