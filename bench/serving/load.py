"""Client-side load for the serving benchmarks (bench_swap, bench/reliability_serving): streaming clients,
percentiles, and the logit bias that keeps a base model generating.

Why the bias: the embedded Gemma 3 270M is a base model with no chat template; asked to chat, it samples an
end-of-generation token first and every answer is empty, so "streaming clients" put no generation load on
the server at all. Its end-of-generation tokens are 1 <eos>, 106 <end_of_turn> and 212 </s> (the earlier
bias named only the first two, and the streams still ended at once); they are read from the GGUF here."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx


def pct(values: list[float], q: float, digits: int = 3) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], digits)


def no_end_bias(gguf: Path) -> dict[str, float]:
    """{token id: -100} for every end-of-generation token of `gguf` (llama.cpp's own list)."""
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        return {str(i): -100.0 for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    finally:
        llm.close()


class Load:
    """Streaming clients in threads: counts answers, failures, answers that mix two models, and tokens."""

    def __init__(self, url: str, n: int, body: dict):
        self.url, self.body, self.stop = url, body, threading.Event()
        self.ok, self.failed, self.mixed, self.chunks, self.errors = 0, 0, 0, 0, []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self):
        while not self.stop.is_set():
            try:
                with httpx.stream("POST", self.url + "/v1/chat/completions", json=self.body, timeout=120) as r:
                    events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
                    models = {e.get("model") for e in events}
                    if r.status_code != 200 or not models:
                        self.failed += 1
                        self.errors.append(r.status_code)
                    else:
                        self.ok += 1
                        self.mixed += len(models) > 1
                        self.chunks += sum(bool(e["choices"][0]["delta"].get("content")) for e in events
                                           if e.get("choices"))
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
