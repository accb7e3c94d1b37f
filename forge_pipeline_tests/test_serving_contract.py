"""Serving's HTTP contract, fast: FastAPI's TestClient with a fake model behind the `loader=`/`probe=` seams
(the real uvicorn + llama-cpp-python tests are test_serving.py and test_serving_reliability.py). Every
refusal has OpenAI's error shape {"error": {"message", "type", "param", "code"}}."""
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings

MSG = [{"role": "user", "content": "hello"}]


class FakeLlama:
    """Answers "tok0 tok1 ..." one token per chunk, calling the logits processors per token as
    llama-cpp-python does; a prompt over 200 characters overflows its 64-token context; `gate` holds generation."""

    def __init__(self, fail_after=None, gate=None):
        self.fail_after, self.gate, self.metadata = fail_after, gate, {"general.architecture": "llama"}

    def reset(self):
        pass

    def close(self):
        pass

    def token_eos(self):
        return 2

    def create_chat_completion(self, messages, max_tokens, stream=False, logits_processor=None, **_):
        import numpy as np

        prompt = sum(len(m["content"]) for m in messages)
        if prompt > 200:
            raise ValueError(f"Requested tokens ({prompt // 2}) exceed context window of 64")

        def tokens():
            for i in range(max_tokens):
                if self.gate is not None:
                    self.gate.wait(10)
                if logits_processor is not None and logits_processor([], np.zeros(8, dtype=np.float32)).argmax() == 2:
                    return  # the end-of-sequence token was forced
                if self.fail_after is not None and i >= self.fail_after:
                    raise RuntimeError("llama_decode returned -3")
                yield f"tok{i} "

        if not stream:
            text = "".join(tokens())
            return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
                "role": "assistant", "content": text}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": max_tokens}}
        return ({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}
                for t in tokens())


def make_gguf(path, general_type=None):
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    if general_type:
        w.add_string("general.type", general_type)
    w.add_string("general.name", "fake " * 10)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def make(model=True, llm=None, **settings):
        home = tmp_path / "home"
        path = make_gguf(home / "models" / "v1" / "model.gguf")
        s = ServingSettings(home=home, trusted_hosts=["testserver"], model_path=path if model else None, **settings)
        app = create_app(s, loader=lambda p: llm or FakeLlama(), probe=lambda p, **kw: {"ok": True})
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def assert_openai_error(r, status, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "Traceback" not in r.text
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_chat_answers_and_names_the_model(make_client):
    c = make_client()
    r = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    [live] = c.get("/v1/models").json()["data"]
    assert r.json()["model"] == live["id"] and live["role"] == "live" and live["sha256"]
    events = [line for line in c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 3, "stream": True})
              .text.splitlines() if line.startswith("data: ")]
    assert len(events) == 4 and events[-1] == "data: [DONE]"
    assert {json.loads(e[6:])["model"] for e in events[:-1]} == {live["id"]}


def test_validation_errors_are_422_in_openai_shape(make_client):
    c = make_client()
    assert_openai_error(c.post("/v1/chat/completions", json={"messages": []}), 422)
    err = assert_openai_error(c.post("/v1/chat/completions", json={"messages": MSG, "logit_bias": {"a": 1}}), 422)
    assert "token ids" in err["message"]
    assert_openai_error(c.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 422)


def test_bad_bodies_are_400(make_client):
    c = make_client()
    h = {"content-type": "application/json"}
    assert_openai_error(c.post("/v1/chat/completions", content=b"{not json", headers=h), 400, "invalid_json")
    assert_openai_error(c.post("/v1/chat/completions", content=b"\xff\xfe\x00\x01", headers=h), 400)
    err = assert_openai_error(c.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", '
                                     b'"content": "hi \\udc80"}]}', headers=h), 400)
    assert "U+DC80" in err["message"] and err["param"] == "messages[0].content"
    err = assert_openai_error(c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 99999}), 400)
    assert err["param"] == "max_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_400_before_any_byte(make_client, stream):
    c = make_client()
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 300}], "stream": stream})
    err = assert_openai_error(r, 400, "context_length_exceeded")
    assert "64 tokens" in err["message"] and "150 tokens" in err["message"] and "0 tokens available" in err["message"]


def test_a_failure_mid_stream_sends_an_error_event_and_ends_the_stream(make_client):
    c = make_client(llm=FakeLlama(fail_after=2))
    r = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 8, "stream": True})
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.status_code == 200 and len(events) == 4, events
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["tok0 ", "tok1 "]
    assert json.loads(events[2])["error"]["type"] == "server_error" and events[3] == "[DONE]"
    err = assert_openai_error(c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}), 500)
    assert "llama_decode" not in err["message"]  # internals stay in the server


def test_body_limit_413_with_and_without_content_length(make_client):
    c = make_client(max_request_bytes=1000)
    assert_openai_error(c.post("/v1/chat/completions", content=b"x" * 5000, headers={"content-type": "application/json"}),
                        413, "request_too_large")

    def chunks():
        for _ in range(100):
            yield b" " * 500

    assert_openai_error(c.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}),
                        413, "request_too_large")


def test_tokens_guard_admin_and_optionally_chat(make_client):
    c = make_client(admin_token="t0k", api_token_required=True)
    assert_openai_error(c.get("/admin/model-status"), 401, "invalid_api_key")
    assert_openai_error(c.get("/admin/model-status", headers={"Authorization": "Bearer nope"}), 401)
    assert c.get("/admin/model-status", headers={"Authorization": "Bearer t0k"}).status_code == 200
    assert_openai_error(c.post("/v1/chat/completions", json={"messages": MSG}), 401)
    assert_openai_error(c.get("/v1/models"), 401)
    ok = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1}, headers={"Authorization": "Bearer t0k"})
    assert ok.status_code == 200
    assert c.get("/health").status_code == 200  # liveness stays open


def test_hosts_and_origins(make_client):
    c = make_client()
    assert_openai_error(c.get("/health", headers={"host": "evil.example"}), 400, "untrusted_host")
    assert_openai_error(c.post("/admin/rollback", headers={"origin": "https://evil.example"}), 403, "foreign_origin")
    assert c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1},
                  headers={"origin": "http://localhost:5173"}).status_code == 200
    allowed = make_client(allowed_origins=["https://chat.example"])
    assert allowed.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1},
                        headers={"origin": "https://chat.example"}).status_code == 200


def test_no_model_is_503_with_retry_after(make_client):
    c = make_client(model=False)
    assert c.get("/health").status_code == 503
    r = c.post("/v1/chat/completions", json={"messages": MSG})
    assert_openai_error(r, 503)
    assert r.headers["retry-after"].isdigit()


def test_a_full_queue_is_429_with_retry_after_and_health_stays_instant(make_client):
    gate = threading.Event()
    c = make_client(llm=FakeLlama(gate=gate), max_queued_requests=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(c.post("/v1/chat/completions", json={
        "messages": MSG, "max_tokens": 2}).status_code)) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.3)  # the first one generating (held by the gate), the second one waiting
    r = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2})
    err = assert_openai_error(r, 429, "server_busy")
    assert r.headers["retry-after"].isdigit() and "waiting" in err["message"]
    t0 = time.time()
    assert c.get("/health").status_code == 200 and c.get("/admin/model-status").json()["queued_requests"] == 1
    assert time.time() - t0 < 1
    gate.set()
    for t in threads:
        t.join(30)
    assert results == [200, 200]


def test_admin_refusals(make_client, tmp_path):
    c = make_client()
    assert_openai_error(c.post("/admin/reload-model", json={"model_path": "/etc/passwd"}), 400)
    assert_openai_error(c.post("/admin/reload-model", json={}), 422)
    assert_openai_error(c.post("/admin/rollback"), 409)
    assert_openai_error(c.get("/no/such/route"), 404)
    assert_openai_error(c.get("/v1/chat/completions"), 405)
