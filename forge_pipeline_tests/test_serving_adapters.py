"""LoRA adapters served on a resident base (issue 14), for real: a tiny Llama base GGUF, adapter GGUFs in
llama.cpp's format written with the gguf library (forge_pipeline_tests.helpers.make_lora_gguf), uvicorn and
llama-cpp-python. Answers are checked against llama-cpp-python's own `Llama(lora_path=...)` in this process."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from forge_pipeline_tests.helpers import Server, make_lora_gguf
from forge_pipeline_tests.tiny_models import make_tiny_gguf

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "What did I learn this week?"}]
ASK = {"messages": MSG, "max_tokens": 12, "temperature": 0, "repeat_penalty": 1.0}  # the reference: llama.cpp alone


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("adapters")
    base = make_tiny_gguf(work / "base.gguf", seed=3, work=work)
    other = make_tiny_gguf(work / "other.gguf", seed=4, work=work)
    return {"base": base, "other": other, "a": make_lora_gguf(base, work / "a.gguf", seed=1, std=0.2),
            "b": make_lora_gguf(base, work / "b.gguf", seed=2, std=0.2)}


@pytest.fixture
def home(tmp_path, files):
    home = tmp_path / "home"
    (home / "base_models" / "tiny").mkdir(parents=True)
    shutil.copy2(files["base"], home / "base_models" / "tiny" / "base.gguf")
    for v in ("a", "b"):
        (home / "models" / f"v-{v}").mkdir(parents=True)
        shutil.copy2(files[v], home / "models" / f"v-{v}" / f"adapter-{v}.gguf")
    return home


def adapter(home, v):
    return str(home / "models" / f"v-{v}" / f"adapter-{v}.gguf")


@pytest.fixture
def server(home):
    s = Server(home, model=home / "base_models" / "tiny" / "base.gguf").wait()
    yield s
    s.stop()


def reference(base, lora=None) -> str:
    from llama_cpp import Llama

    llm = Llama(str(base), n_ctx=512, verbose=False, **({"lora_path": str(lora)} if lora else {}))
    try:
        return llm.create_chat_completion(**ASK)["choices"][0]["message"]["content"]
    finally:
        llm.close()


def answer(server, model=None) -> tuple[str, str]:
    r = server.post("/v1/chat/completions", json={**ASK, **({"model": model} if model else {})})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"], r.json()["model"]


def test_an_adapter_swaps_in_on_the_resident_base_and_answers_like_llama_cpp(server, home, files):
    base_text, base_id = answer(server)
    assert base_text == reference(files["base"])
    base_sha = server.get("/admin/model-status").json()["sha256"]

    r = server.post("/admin/reload-model", json={"model_path": adapter(home, "a")})
    assert r.status_code == 200, r.text
    a = r.json()["model"]
    assert a["kind"] == "adapter" and a["base_sha256"] == base_sha and a["version"] == "v-a"
    a_text, a_id = answer(server)
    assert a_id == a["model_id"] and a_text == reference(files["base"], files["a"]) and a_text != base_text

    b = server.post("/admin/reload-model", json={"model_path": adapter(home, "b")}).json()["model"]
    b_text, _ = answer(server)  # same prompt right after the swap: no stale KV from adapter a
    assert b_text == reference(files["base"], files["b"]) and b_text not in (a_text, base_text)

    # side by side: the bare base and the previous adapter, still resident; the model field says which
    assert answer(server, "base") == (base_text, base_id)
    assert answer(server, "previous") == (a_text, a_id)
    models = {m["role"]: m for m in server.get("/v1/models").json()["data"]}
    assert set(models) == {"live", "base", "previous"}
    assert models["live"]["id"] == b["model_id"] and models["previous"]["id"] == a_id and models["base"]["id"] == base_id
    assert all(m["sha256"] and m["loaded_at"] and m["version"] for m in models.values())

    r = server.post("/admin/rollback")  # the previous adapter is resident: a pointer swap
    assert r.status_code == 200 and r.json()["model"]["model_id"] == a_id
    assert answer(server) == (a_text, a_id)


def test_a_restart_comes_back_on_the_adapter_and_its_base(home):
    s = Server(home, model=home / "base_models" / "tiny" / "base.gguf").wait()
    try:
        a = s.post("/admin/reload-model", json={"model_path": adapter(home, "a")}).json()["model"]
        text, _ = answer(s)
    finally:
        s.stop()
    record = json.loads((home / "serving" / "deployments.json").read_text())
    assert record["current"]["path"] == "models/v-a/adapter-a.gguf"  # relative to FORGE_HOME
    assert record["current"]["base_path"] == "base_models/tiny/base.gguf"
    s = Server(home).wait()
    try:
        status = s.get("/admin/model-status").json()
        assert status["kind"] == "adapter" and status["sha256"] == a["sha256"]
        assert answer(s) == (text, a["model_id"])
    finally:
        s.stop()


def write_bad_shape_adapter(base, out, sha):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    w.add_string("forge.base_gguf_sha256", sha)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 65), dtype=np.float32))  # the base has 64 inputs
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_mismatched_or_damaged_adapter_is_refused_and_the_old_one_serves_on(server, home, files):
    assert server.post("/admin/reload-model", json={"model_path": adapter(home, "a")}).status_code == 200
    before = server.get("/admin/model-status").json()
    bad = home / "models" / "bad"
    bad.mkdir()
    sha = before["base_sha256"]
    cases = {
        "other base": make_lora_gguf(files["other"], bad / "other.gguf", seed=5),
        "no base recorded": make_lora_gguf(files["base"], bad / "nokey.gguf", seed=5, base_sha256=None),
        "wrong shapes": bad / "shape.gguf",
    }
    write_bad_shape_adapter(files["base"], cases["wrong shapes"], sha)
    cut = bad / "cut.gguf"
    data = (home / "models" / "v-b" / "adapter-b.gguf").read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    cases["truncated"] = cut
    messages = {}
    for why, path in cases.items():
        r = server.post("/admin/reload-model", json={"model_path": str(path)})
        assert r.status_code == 422, (why, r.text)
        messages[why] = r.json()["error"]["message"]
        after = server.get("/admin/model-status").json()
        assert after["sha256"] == before["sha256"] and after["state"] == "ready"
        assert answer(server)[1] == before["model_id"]
    assert "made for the base GGUF" in messages["other base"]
    assert "forge.base_gguf_sha256" in messages["no base recorded"]
    assert "truncated" in messages["truncated"] or "validation" in messages["truncated"]
    assert "validation" in messages["wrong shapes"]
    assert server.proc.poll() is None


def test_swapping_adapters_under_streaming_load_drops_and_mixes_nothing(server, home):
    refs = {}
    for v in ("a", "b"):
        m = server.post("/admin/reload-model", json={"model_path": adapter(home, v)}).json()["model"]
        refs[m["model_id"]] = answer(server)[0]
    results, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=120,
                                  json={**ASK, "stream": True}) as r:
                    if r.status_code != 200:
                        errors.append(r.status_code)
                        continue
                    chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
                    results.append(({c["model"] for c in chunks},
                                    "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for v in ("a", "b") * 4:
        time.sleep(0.2)
        assert server.post("/admin/reload-model", json={"model_path": adapter(home, v)}).status_code == 200
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) >= 6
    for models, text in results:
        assert len(models) == 1  # one model per answer
        [model_id] = models
        assert text == refs[model_id], (model_id, text)  # and exactly that model's answer: no mix, no stale KV
    assert len({next(iter(m)) for m, _ in results}) == 2


def write_nan_adapter(base, out):
    """A well-formed adapter (right base, names, shapes, size) whose first tensor is all NaN: llama.cpp
    loads it and decodes with it without complaint, and every answer it gives is garbage."""
    import numpy as np

    from serving.gguf_header import read_gguf_header

    make_lora_gguf(base, out, seed=7, std=0.2)
    header = read_gguf_header(out)
    t = header.tensors[0]
    n = int(np.prod(t.shape))
    with out.open("r+b") as f:
        f.seek(header.data_offset + t.offset)
        f.write(np.full(n, np.nan, dtype=np.float32).tobytes())
    return out


def test_an_adapter_that_makes_the_output_nan_is_refused(server, home, files):
    assert server.post("/admin/reload-model", json={"model_path": adapter(home, "a")}).status_code == 200
    before = server.get("/admin/model-status").json()
    bad = write_nan_adapter(files["base"], home / "models" / "nan" / "adapter.gguf")
    r = server.post("/admin/reload-model", json={"model_path": str(bad)})
    assert r.status_code == 422, r.text
    assert "not finite" in r.json()["error"]["message"]
    assert server.get("/admin/model-status").json()["sha256"] == before["sha256"]
    assert answer(server)[1] == before["model_id"]


def _children(pid: int) -> set[int]:
    """Live child processes of `pid` (from /proc; zombies not yet reaped are not counted)."""
    from pathlib import Path

    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for c in (task / "children").read_text().split():
            try:
                state = Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.add(int(c))
    return out


def test_a_known_adapter_is_not_validated_again(server, home):
    """Validation is remembered by (adapter sha256, base sha256): the same bytes on the same base pass the
    same checks, so a re-deploy (a rollback by path, the nightly re-sending last night's file) is instant.
    Checked from outside: with the validation process killed, re-deploying a known adapter starts none,
    while a new adapter does."""
    import os
    import signal

    for v in ("a", "b"):
        assert server.post("/admin/reload-model", json={"model_path": adapter(home, v)}).status_code == 200
    for pid in _children(server.proc.pid):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _children(server.proc.pid) == set()
    r = server.post("/admin/reload-model", json={"model_path": adapter(home, "a")})
    assert r.status_code == 200, r.text
    assert r.json()["timings"]["validation"] == "known"
    assert _children(server.proc.pid) == set()  # no validation process was needed
    new = make_lora_gguf(home / "base_models" / "tiny" / "base.gguf", home / "models" / "v-c" / "adapter.gguf",
                         seed=9, std=0.2)
    r = server.post("/admin/reload-model", json={"model_path": str(new)})
    assert r.status_code == 200, r.text
    assert r.json()["timings"]["validation"] == "checked"
    assert len(_children(server.proc.pid)) == 1  # a fresh validation process checked the new file


def test_rolling_back_the_first_adapter_says_it_is_the_bare_base(server, home):
    """Found by hand: `forge rollback` from the first deployed adapter goes to the bare base (serving's real
    rollback); the person is told that, not just a file name."""
    first = server.post("/admin/reload-model", json={"model_path": adapter(home, "a")}).json()["model"]
    env = {**os.environ, "FORGE_HOME": str(home), "FORGE_SERVING_URL": server.url}
    env.pop("FORGE_ADMIN_TOKEN", None)
    forge = str(Path(sys.executable).with_name("forge"))
    r = subprocess.run([forge, "rollback"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    status = server.get("/admin/model-status").json()
    assert status["kind"] == "full" and status["sha256"] == first["base_sha256"]  # really on the bare base
    said = r.stdout.lower()
    assert "base model" in said and "no adapter" in said and "v-a" in said, r.stdout


def test_forge_serve_says_it_serves_the_adapter_on_its_base(home, files, tmp_path):
    """Found by hand: `forge serve` with an adapter export logged `serving <base GGUF>` while it served base +
    adapter. Its log names what is served: the adapter's version on the base."""
    from forge_pipeline.export.manifest import BaseGGUFRef, ExportManifest, SourceAdapter
    from forge_pipeline.files import sha256_file
    from forge_pipeline_tests.helpers import free_port

    base = home / "base_models" / "tiny" / "base.gguf"
    ExportManifest(version="v-a", kind="adapter", file="adapter-a.gguf", quantization="f32",
                   sha256=sha256_file(adapter(home, "a")), size_mb=0.1,
                   base=BaseGGUFRef(path="base_models/tiny/base.gguf", sha256=sha256_file(base), quantization="f32",
                                    base_fingerprint="f" * 16, size_mb=1.0),
                   source_adapter=SourceAdapter(path="training/final", fingerprint="f" * 16),
                   validation={"loads": True, "has_chat_template": True, "answers": ["a fine answer"],
                               "degenerate": [None], "perplexity_ratio": 1.0, "parity_ok": True},
                   created="2026-11-25T03:00:00Z").write(home / "models" / "v-a")
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "FORGE_HOME": str(home), "FORGE_SERVING_URL": url, "FORGE_N_CTX": "512"}
    env.pop("FORGE_ADMIN_TOKEN", None)
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("forge")), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.time() + 120, {}
        while time.time() < deadline and status.get("kind") != "adapter":
            try:
                status = httpx.get(url + "/admin/model-status", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        assert status.get("version") == "v-a", status
        assert status["previous"]["sha256"] == sha256_file(base)  # its rollback target: the bare base
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    said = Path(log.name).read_text()
    served = [line for line in said.splitlines() if line.startswith("serving ")]
    assert served and all("adapter v-a" in line and "base.gguf" in line for line in served), said


def test_a_queued_request_follows_the_swap_and_keeps_no_retired_adapter_resident(home, files, tmp_path):
    """Issue 14's RSS creep under load: each queued request used to lease the adapter live when it arrived, so
    3 streaming clients kept up to 3 retired adapters resident beside the live and previous ones (measured:
    RssAnon followed the adapter count, 14.5 MB each for the embedded Gemma; bench.serving.swap_rss_diag).
    A request that named no model now follows swaps until its answer starts; one that started, or named the
    live model's id, stays on its adapter (which stays loaded until it ends)."""
    from llama_cpp import Llama

    from serving.deployments import DeploymentHistory
    from serving.model_manager import ModelManager

    for v in ("c", "d"):
        make_lora_gguf(files["base"], home / "models" / f"v-{v}" / f"adapter-{v}.gguf", seed=ord(v), std=0.2)
    manager = ModelManager(roots=[home], history=DeploymentHistory(tmp_path / "deployments.json", home),
                           loader=lambda p: Llama(str(p), n_ctx=256, verbose=False),
                           probe=lambda p, **kw: {"ok": True}, log=lambda s: None)
    try:
        manager.reload(str(home / "base_models" / "tiny" / "base.gguf"))
        manager.reload(adapter(home, "a"))
        first = manager.live
        queued, pinned, streaming = manager.acquire(), manager.acquire(first.model_id), manager.acquire()
        assert streaming.start() is first
        worker = first.base.worker
        for v in ("b", "c"):  # a: live -> previous -> retired
            manager.reload(adapter(home, v))
        worker.call(lambda: None, timeout=30)  # the frees the swaps posted have run
        assert queued.deployment is manager.live and manager.live.adapter.version == "v-c"
        assert pinned.deployment is first and streaming.deployment is first  # named it, or already answering
        assert first.adapter.handle is not None and first.adapter.leases == 2
        pinned.release()
        streaming.release()
        worker.call(lambda: None, timeout=30)
        assert first.adapter.handle is None  # the retired adapter is freed with its last started request
        assert queued.start() is manager.live
        third = manager.live
        manager.reload(adapter(home, "d"))
        manager.reload(adapter(home, "a"))  # c: live -> previous -> retired, while `queued` answers on it
        worker.call(lambda: None, timeout=30)
        assert queued.deployment is third and third.adapter.handle is not None
        queued.release()
        worker.call(lambda: None, timeout=30)
        assert third.adapter.handle is None
        retiring = manager.prev.adapter  # d: previous now, retired by the next swap with no request on it
        gate, dispose = threading.Event(), manager._dispose

        def busy_then_dispose(adapters, bases):  # the worker is busy for 0.3 s when the swap posts the free
            worker.post(gate.wait)
            threading.Timer(0.3, gate.set).start()
            return dispose(adapters, bases)

        manager._dispose = busy_then_dispose
        result = manager.reload(adapter(home, "b"))
        assert retiring.handle is None  # freed before the reload returned (its memory is back by then)
        assert result["timings"]["free_s"] >= 0.2, result["timings"]  # the reload waited for it
        assert manager._waiting == set()
    finally:
        manager.shutdown()
