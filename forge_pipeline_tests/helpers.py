"""Shared test helpers (additive: each helper says who uses it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from forge_pipeline_tests.tiny_models import WORDS

# ---- the serving process (test_serving*.py, test_end_to_end, test_orchestration; owner H1) --------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m serving` for real (uvicorn, llama-cpp-python) on a free loopback port; its log goes to a
    file (a pipe nobody reads fills up and stalls the server)."""

    def __init__(self, home: Path, token: str | None = None, model: Path | None = None, host: str = "127.0.0.1",
                 env: dict | None = None):
        self.home, self.port = home, free_port()
        full_env = {**os.environ, "FORGE_HOME": str(home), "FORGE_N_CTX": "512"}
        for var in ("FORGE_ADMIN_TOKEN", "FORGE_SERVING_URL", "FORGE_API_TOKEN_REQUIRED"):
            full_env.pop(var, None)
        if token:
            full_env["FORGE_ADMIN_TOKEN"] = token
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "serving", "--host", host, "--port", str(self.port)]
        if model:
            cmd += ["--model", str(model)]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serving-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait(self, timeout=120) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.output())
            try:
                httpx.get(self.url + "/health", timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("server did not start")

    def get(self, path, **kw):
        return httpx.get(self.url + path, headers={**self.headers, **kw.pop("headers", {})},
                         timeout=kw.pop("timeout", 60), **kw)

    def post(self, path, **kw):
        return httpx.post(self.url + path, headers={**self.headers, **kw.pop("headers", {})},
                          timeout=kw.pop("timeout", 300), **kw)

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
            self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def stream_some(url: str, chunks: int, body: dict, timeout: float = 120, client: httpx.Client | None = None) -> int:
    """Open a chat stream, read `chunks` data events, then drop the connection (a chat UI's Stop button).
    Returns the status code. (test_serving_reliability, bench/reliability_serving)"""
    seen = 0
    c = client or httpx.Client(timeout=timeout)
    try:
        with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return r.status_code
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                    if seen >= chunks:
                        break
    finally:
        if client is None:
            c.close()
    return 200


class StreamCrowd:
    """`n` concurrent chat streams, every `abort_every`-th dropped after its first chunk (issue 11 item 2):
    `codes` gets each stream's status (or the client error), `retry_after` each 429's header.
    Each stream has its own httpx.Client over one shared SSL context: a client with its own context costs
    ~31 ms of CPU under this process's GIL (0.2 ms with a shared one, measured here), so 100 of them delayed
    the caller's own /health probe by ~2 s and that was measured as the server's latency; one client shared by
    all 100 threads once failed a stream on the client side (ReadError EBADF: a socket its pool had closed
    under another thread). (test_serving_reliability, bench/reliability_serving)"""

    def __init__(self, url: str, body: dict, n: int = 100, abort_every: int = 4, timeout: float = 300):
        import ssl
        import threading

        self.url, self.body, self.timeout = url, body, timeout
        self._ssl = ssl.create_default_context()
        self.codes: list = []
        self.retry_after: list = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._aborted if i % abort_every == 0 else self._full, daemon=True)
                        for i in range(n)]

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, verify=self._ssl)

    def _full(self) -> None:
        try:
            with self._client() as client, client.stream("POST", self.url + "/v1/chat/completions", json=self.body) as r:
                list(r.iter_lines())
                with self._lock:
                    self.codes.append(r.status_code)
                    if r.status_code == 429:
                        self.retry_after.append(r.headers.get("retry-after"))
        except httpx.HTTPError as e:
            with self._lock:
                self.codes.append(repr(e)[:80])

    def _aborted(self) -> None:
        try:
            with self._client() as client:
                code = stream_some(self.url, 1, self.body, self.timeout, client=client)
        except httpx.HTTPError as e:
            code = repr(e)[:80]
        with self._lock:
            self.codes.append(code)

    def start(self) -> StreamCrowd:
        for t in self.threads:
            t.start()
        return self

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=self.timeout)


def make_lora_gguf(base_gguf: Path, out: Path, *, seed: int = 0, rank: int = 4, alpha: float = 8.0,
                   std: float = 0.05, targets: tuple[str, ...] = ("attn_q", "attn_k", "attn_v", "attn_output",
                                                                  "ffn_gate", "ffn_up", "ffn_down"),
                   base_sha256: str | None = "auto", extra: dict | None = None) -> Path:
    """A random LoRA adapter GGUF in llama.cpp's format for `base_gguf` (written with the gguf library):
    general.type = adapter, adapter.type = lora, adapter.lora.alpha, and `<name>.lora_a` (r x n_in) /
    `<name>.lora_b` (n_out x r) for the base's 2-D weights whose name contains a target. `base_sha256="auto"`
    records the base's real sha256 as forge.base_gguf_sha256 (the key serving checks); None leaves it out."""
    import hashlib

    import gguf
    import numpy as np

    from serving.gguf_header import read_gguf_header

    header = read_gguf_header(base_gguf)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), header.metadata["general.architecture"])
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    if base_sha256 == "auto":
        base_sha256 = hashlib.sha256(Path(base_gguf).read_bytes()).hexdigest()
    if base_sha256:
        writer.add_string("forge.base_gguf_sha256", base_sha256)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    for t in header.tensors:
        if len(t.shape) != 2 or not t.name.endswith(".weight") or not any(f".{k}." in t.name for k in targets):
            continue
        n_in, n_out = t.shape  # GGUF lists ne0 (the input size) first
        writer.add_tensor(f"{t.name}.lora_a", rng.normal(0, std, (rank, n_in)).astype(np.float32))
        writer.add_tensor(f"{t.name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# ---- a tiny Gemma 3 (test_chat_template, test_evaluation) ---------------------------------------------------


def make_gemma_tokenizer(out: Path, turn_tokens: bool = True,
                         control: tuple[str, ...] = ("<start_of_turn>", "<end_of_turn>"), dummy_prefix: bool = False
                         ) -> Path:
    """A real SentencePiece tokenizer shaped like Gemma's: <start_of_turn>/<end_of_turn> (or ``control``) as
    control pieces (llama.cpp's converter takes token types from tokenizer.model) and no dummy prefix space
    (``dummy_prefix``: one, as llama.cpp's Llama vocabulary expects)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(14)) for i in range(2000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=400, model_type="bpe", bos_id=1, eos_id=2,
        pad_id=0, unk_id=3, byte_fallback=True, bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        unk_piece="<unk>", minloglevel=2, add_dummy_prefix=dummy_prefix,
        control_symbols=list(control) if turn_tokens else [])
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


LLAMA3_TURN_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def make_tiny_llama3_base(out: Path, seed: int = 0) -> Path:
    """Shaped like a pretrained Llama 3.1 8B base (not the Instruct GPU default): an untied Llama whose vocabulary has
    Llama 3's turn tokens, which ships the instruct template as its own but never trained those tokens: their
    embedding and output rows are zero (unsloth issues #915, #929)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from forge_pipeline.training.chat_template import LLAMA3_CHAT_TEMPLATE

    make_gemma_tokenizer(out, control=LLAMA3_TURN_TOKENS, dummy_prefix=True)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        # trained embeddings share a common direction (anisotropy), so their mean is no zero row; and the base
        # predicts EOS with a logit of its own: both make a missing seed visible in the served model's outputs
        model.get_input_embeddings().weight += 0.05 * torch.randn(cfg.hidden_size)
        model.get_output_embeddings().weight[cfg.eos_token_id] *= 10
        for t in LLAMA3_TURN_TOKENS:
            row = tok.convert_tokens_to_ids(t)
            model.get_input_embeddings().weight[row] = 0.0
            model.get_output_embeddings().weight[row] = 0.0
    model.to(torch.bfloat16).save_pretrained(out)  # as Llama 3.1 ships: bf16 rows, exact in f16 and in fp32
    return out


def two_tiny_ggufs(work: Path) -> dict[str, Path]:
    """Two different tiny real GGUFs, "a" and "b" (the serving tests swap between them)."""
    from forge_pipeline_tests.tiny_models import make_tiny_gguf

    return {"a": make_tiny_gguf(work / "a.gguf", seed=1, work=work), "b": make_tiny_gguf(work / "b.gguf", seed=2, work=work)}


def home_with_models(home: Path, ggufs: dict[str, Path]) -> Path:
    """A FORGE_HOME whose models/ holds each GGUF as its own version (v-a/companion-a.gguf, ...)."""
    import shutil

    for name, src in ggufs.items():
        dst = home / "models" / f"v-{name}" / f"companion-{name}.gguf"
        dst.parent.mkdir(parents=True)
        shutil.copy2(src, dst)
    return home


def tiny_cfg(base, **kw):
    """A TrainingConfig for the tiny base: 4 short steps, checkpoints and evals every 2."""
    from forge_pipeline.training.config import TrainingConfig

    return TrainingConfig(**{"base_model": str(base), "max_steps": 4, "batch_size": 4, "gradient_accumulation_steps": 1,
                             "max_seq_length": 384, "logging_steps": 1, "save_steps": 2, "eval_steps": 2,
                             "learning_rate": 5e-3, **kw})


def random_lora_adapter(base_dir, out: Path, seed: int = 0, rank: int = 4, b_scale: float = 1.0,
                        target_modules: tuple[str, ...] = ("q_proj", "v_proj")):
    """A LoRA adapter folder as the trainer publishes it (weights, tokenizer, chat template), untrained:
    random A and B (B times ``b_scale``), so the model differs from its base. Returns (peft model, tokenizer)
    still in memory, as the trainer holds them at the end of training."""
    import os
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_pipeline.training.chat_template import prepare_tokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    template = prepare_tokenizer(tok)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules),
                                      init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(b_scale)
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "chat_template.jinja").write_text(template)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return model, tok
