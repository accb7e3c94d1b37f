"""The serving process for real: uvicorn on loopback, llama-cpp-python, tiny real GGUFs, the openai client."""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest

from forge_pipeline_tests.helpers import Server, free_port, home_with_models, two_tiny_ggufs  # noqa: F401 - re-exported for older imports

MSG = [{"role": "user", "content": "What did I learn this week?"}]


@pytest.fixture
def server(models_home):
    s = Server(models_home, model=models_home / "models" / "v-a" / "companion-a.gguf").wait()
    yield s
    s.stop()


def test_health_without_model_is_not_ready(tmp_path):
    s = Server(tmp_path / "empty").wait()
    try:
        r = s.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "no_model"
        assert s.post("/v1/chat/completions", json={"messages": MSG}).status_code == 503
    finally:
        s.stop()


def test_chat_with_the_openai_client(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert server.get("/health").json()["status"] == "ready"
    [model] = client.models.list().data
    out = client.chat.completions.create(model=model.id, messages=MSG, max_tokens=8, temperature=0)
    assert out.model == model.id and out.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model=model.id, messages=MSG, max_tokens=8, temperature=0, stream=True))
    assert len(chunks) >= 2 and {c.model for c in chunks} == {model.id}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content


def test_reload_under_streaming_load_drops_nothing(server, models_home):
    paths = [str(models_home / "models" / v / f"companion-{v[-1]}.gguf") for v in ("v-b", "v-a", "v-b")]
    results, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=120,
                                  json={"messages": MSG, "max_tokens": 16, "stream": True, "temperature": 0}) as r:
                    if r.status_code != 200:
                        errors.append(r.status_code)
                        continue
                    models = {json.loads(line[6:])["model"] for line in r.iter_lines()
                              if line.startswith("data: {")}
                    results.append(models)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    seen_ids = []
    for p in paths:
        time.sleep(0.5)
        r = server.post("/admin/reload-model", json={"model_path": p})
        assert r.status_code == 200, r.text
        seen_ids.append(r.json()["model"]["model_id"])
        new = httpx.post(server.url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=60)
        assert new.json()["model"] == seen_ids[-1]  # a request after the swap sees the new model
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(results) >= 8
    assert all(len(m) == 1 for m in results)  # each answer wholly from one model
    assert len(set().union(*results)) >= 2


@pytest.mark.parametrize("content,kind", [(b"", "empty"), (b"GGUF\x03\x00\x00\x00" + b"\x00" * 40, "truncated"),
                                          (b"not a gguf at all, just text", "bad magic")])
def test_bad_files_are_refused_and_the_old_model_keeps_serving(server, models_home, content, kind):
    pid, before = server.proc.pid, server.get("/admin/model-status").json()
    bad = models_home / "models" / "bad" / f"{kind.replace(' ', '_')}.gguf"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(content)
    r = server.post("/admin/reload-model", json={"model_path": str(bad)})
    assert r.status_code == 422, r.text
    assert "Traceback" not in r.text
    assert server.proc.poll() is None and server.proc.pid == pid
    assert server.get("/admin/model-status").json()["sha256"] == before["sha256"]
    assert server.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}).status_code == 200


def test_corrupted_tensor_data_is_caught_in_the_probe(server, models_home, ggufs):
    good = ggufs["a"].read_bytes()
    bad = models_home / "models" / "bad2" / "cut.gguf"
    bad.parent.mkdir()
    bad.write_bytes(good[: len(good) // 2])  # valid header, tensors cut off
    r = server.post("/admin/reload-model", json={"model_path": str(bad)})
    assert r.status_code == 422 and "validation" in r.json()["error"]["message"]
    assert server.proc.poll() is None


def test_hugging_face_dir_gets_an_export_hint(server, models_home):
    hf = models_home / "training" / "final"
    hf.mkdir(parents=True)
    (hf / "adapter_config.json").write_text("{}")
    r = server.post("/admin/reload-model", json={"model_path": str(hf)})
    assert r.status_code == 422 and "forge export" in r.json()["error"]["message"]


def test_path_traversal_and_bad_paths_are_400(server, models_home, tmp_path, ggufs):
    outside = tmp_path / "outside.gguf"
    shutil.copy2(ggufs["a"], outside)
    link = models_home / "models" / "escape.gguf"
    link.symlink_to(outside)
    other = models_home / "models" / "v-a" / "notes.txt"
    other.write_text("x")
    cases = [str(models_home / "models" / ".." / ".." / "outside.gguf"), str(outside), "/etc/passwd",
             str(link), str(models_home / "models" / "v-a" / "companion-a.gguf\x00.txt"), str(other),
             "../../../etc/shadow.gguf", str(models_home / "models" / "missing.gguf")]
    for raw in cases:
        r = server.post("/admin/reload-model", json={"model_path": raw})
        assert r.status_code == 400, (raw, r.text)


def test_rollback_and_no_backup(server, models_home):
    a = server.get("/admin/model-status").json()
    b = server.post("/admin/reload-model", json={"model_path": str(models_home / "models" / "v-b")}).json()
    assert b["previous"]["sha256"] == a["sha256"]
    r = server.post("/admin/rollback")
    assert r.status_code == 200 and r.json()["model"]["sha256"] == a["sha256"]
    r = server.post("/admin/reload-model", json={"model_path": str(models_home / "models" / "v-b"), "backup": False})
    assert r.status_code == 200 and r.json()["previous"] is None
    assert server.post("/admin/rollback").status_code == 409


def test_concurrent_reloads_are_serialized(server, models_home):
    codes = []
    paths = [str(models_home / "models" / "v-b"), str(models_home / "models" / "v-a")] * 2
    threads = [threading.Thread(target=lambda p=p: codes.append(server.post("/admin/reload-model", json={"model_path": p}).status_code))
               for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(codes) <= {200, 409} and 200 in codes
    status = server.get("/admin/model-status").json()
    assert status["state"] == "ready" and server.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}).status_code == 200


def test_restart_comes_back_on_the_last_good_model(models_home):
    s = Server(models_home, model=models_home / "models" / "v-a" / "companion-a.gguf").wait()
    try:
        b = s.post("/admin/reload-model", json={"model_path": str(models_home / "models" / "v-b")}).json()["model"]
    finally:
        s.stop()
    s2 = Server(models_home, model=models_home / "models" / "v-a" / "companion-a.gguf").wait()
    try:
        assert s2.get("/admin/model-status").json()["sha256"] == b["sha256"]
    finally:
        s2.stop()


def test_admin_token(models_home):
    s = Server(models_home, token="s3cret", model=models_home / "models" / "v-a" / "companion-a.gguf").wait()
    try:
        assert httpx.get(s.url + "/admin/model-status").status_code == 401
        assert httpx.get(s.url + "/admin/model-status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert s.get("/admin/model-status").status_code == 200
        assert httpx.post(s.url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=60).status_code == 200
    finally:
        s.stop()


def test_non_loopback_bind_needs_a_token(tmp_path):
    env = {**os.environ, "FORGE_HOME": str(tmp_path)}
    env.pop("FORGE_ADMIN_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "serving", "--host", "0.0.0.0", "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "FORGE_ADMIN_TOKEN" in r.stderr


def test_logit_bias_steers_greedy_generation(server):
    """OpenAI's logit_bias (token id -> bias) reaches the sampler: +100 on one token makes greedy decoding repeat it."""
    def answer(bias=None):
        body = {"messages": MSG, "max_tokens": 6, "temperature": 0, **({"logit_bias": bias} if bias else {})}
        r = server.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    forced = {tid: answer({str(tid): 100}) for tid in (300, 301)}
    for text in forced.values():
        assert re.fullmatch(r"(.+?)\1+", text, flags=re.S), text  # one piece, repeated
    assert forced[300] != forced[301] and answer() not in forced.values()
    r = server.post("/v1/chat/completions", json={"messages": MSG, "logit_bias": {"hello": 5}})
    assert r.status_code == 422 and "token ids" in r.json()["error"]["message"]


def test_request_limits(server):
    r = server.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 100000})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = server.post("/v1/chat/completions", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = server.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_seed_client_interfaces(server, monkeypatch, models_home):
    from forge_pipeline.config import load_config
    from forge_pipeline.reload import get_model_status, reload_model

    monkeypatch.setenv("FORGE_SERVING_URL", server.url)  # a non-default port: one setting says where serving is
    cfg = load_config(home=str(models_home))
    status = get_model_status(cfg)
    assert status["serving"] == "up" and status["size_mb"] > 0
    out = reload_model(cfg, models_home / "models" / "v-b" / "companion-b.gguf")
    assert out["status"] == "reloaded" and get_model_status(cfg)["sha256"] == out["model"]["sha256"]
    with pytest.raises(RuntimeError, match="400"):
        reload_model(cfg, "/etc/passwd")
    # the seed's curl call
    curl = subprocess.run(["curl", "-s", "-X", "POST", f"http://localhost:{server.port}/admin/reload-model",
                           "-H", "Content-Type: application/json",
                           "-d", json.dumps({"model_path": str(models_home / "models" / "v-a" / "companion-a.gguf")})],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(curl.stdout)["status"] == "reloaded"


def test_serving_binds_where_FORGE_SERVING_URL_says_and_the_client_waits_for_it(models_home, monkeypatch):
    """Server and every client read one setting; the client retries with backoff while serving starts."""
    import httpx as _httpx

    from serving.client import ServingAdminClient, ServingRefused

    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "FORGE_HOME": str(models_home), "FORGE_SERVING_URL": url}
    env.pop("FORGE_ADMIN_TOKEN", None)
    monkeypatch.setenv("FORGE_SERVING_URL", url)
    monkeypatch.delenv("FORGE_ADMIN_TOKEN", raising=False)
    client = ServingAdminClient.from_env(backoff_s=0.5, max_attempts=9)
    proc = {}

    def start_later():
        time.sleep(1.5)
        proc["p"] = subprocess.Popen([sys.executable, "-m", "serving", "--model",
                                      str(models_home / "models" / "v-a" / "companion-a.gguf")], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t = threading.Thread(target=start_later)
    t.start()
    try:
        assert client.base_url == url
        status = client.status()  # refused connections first, then the answer
        assert status["state"] == "ready"
        assert client.health()["status"] == "ready"
        out = client.reload(models_home / "models" / "v-b")
        assert out["model"]["version"] == "v-b"
        assert client.rollback()["model"]["version"] == "v-a"
        with pytest.raises(ServingRefused) as e:
            client.reload("/etc/passwd")
        assert e.value.status == 400
        assert _httpx.get(url + "/health").status_code == 200
    finally:
        t.join()
        proc["p"].terminate()
        proc["p"].wait(30)


def test_the_evaluation_probes_with_what_a_request_that_sets_nothing_gets(models_home):
    """Serving's sampling defaults have one owner (ServingSettings): a chat request that sets none gets them,
    and the nightly evaluation answers its probes with them (Sampling.from_serving). Greedy (temperature 0)
    with a strong repeat penalty, so both must produce the same tokens; and the penalty must matter here."""
    from forge_pipeline.evaluation.served import LoadedModel, Sampling, ServedModel
    from serving.settings import ServingSettings

    gguf = models_home / "models" / "v-a" / "companion-a.gguf"
    env = {"FORGE_DEFAULT_TEMPERATURE": "0", "FORGE_DEFAULT_REPEAT_PENALTY": "1.5", "FORGE_DEFAULT_MAX_TOKENS": "24"}
    s = Server(models_home, model=gguf, env=env).wait()
    try:
        def served(**body):
            r = s.post("/v1/chat/completions", json={"messages": MSG, **body})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        by_default, without_penalty = served(), served(repeat_penalty=1.0)
    finally:
        s.stop()
    sampling = Sampling.from_serving(ServingSettings(default_temperature=0, default_repeat_penalty=1.5,
                                                     default_max_tokens=24))
    with LoadedModel(ServedModel(gguf), 512) as m:
        probe = m.answer(MSG[0]["content"], sampling)
    assert by_default != without_penalty  # the setting reached llama.cpp's sampler
    assert probe.text == by_default
