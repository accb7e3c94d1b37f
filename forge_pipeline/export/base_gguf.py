"""The base GGUF an adapter is served on: converted (and quantized) once per base model, quantization and
tokenizer, cached under base_models_dir/gguf/<key of the base fingerprint>/, never rebuilt by a nightly.

Measured on the H100 for the 8B (bench/results/gpu_export_8b_h100.json): merge 23-53 s, convert 56-75 s,
quantize 80-85 s per night when the whole model is re-exported; with the base cached, a night only writes
the adapter (seconds).

The tokenizer and chat template written into the base GGUF are the trained adapter's (the same files
merge_only puts in a merged model), since serving formats prompts with the base GGUF's template: a
different template (a new forge version choosing another one) gives a different cached file, keyed by the
hash of those files. Its untrained turn rows are seeded as training seeded them (convert_to_gguf, through
export/turn_rows.py); a file built under an older seeding rule (SEEDING_FORMAT) is not reused: the new one
has another name, and the old one is pruned with the versions that used it (retention.py).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from forge_pipeline.export.gguf import QUANTIZATIONS, convert_to_gguf, quantize_gguf
from forge_pipeline.export.merge import ExportError, load_base_16bit
from forge_pipeline.files import atomic_write_json, sha256_file, sha256_text
from forge_pipeline.training.turn_tokens import SEEDING_FORMAT

# Tokenizer files that decide how prompts are tokenized and formatted; taken from the adapter folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "tokenizer.model")
INFO_SUFFIX = ".json"


@dataclass(frozen=True)
class BaseGGUF:
    path: Path
    sha256: str
    quantization: str
    base_fingerprint: str
    size_mb: float
    status: str  # "built" | "cached"
    build_s: float = 0.0


def tokenizer_digest(adapter_dir: Path) -> str:
    parts = []
    for name in TOKENIZER_FILES:
        p = Path(adapter_dir) / name
        if p.is_file():
            parts.append(f"{name}:{sha256_file(p)}")
    return sha256_text(";".join(parts))


def cache_dir_for(base_models_dir: Path, base_fingerprint: str) -> Path:
    return Path(base_models_dir) / "gguf" / sha256_text(base_fingerprint)[:16]


def _is_quantized(base_path: str) -> bool:
    cfg = Path(base_path) / "config.json"
    return not cfg.is_file() or "quantization_config" in json.loads(cfg.read_text())


def _shadow_dir(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    """A folder the converter reads as the base model: links to the base's weights and config, plus the
    adapter's tokenizer and chat template (and the base's tokenizer.model when the adapter has none: from it
    the converter pads the vocabulary to the embedding's rows, see merge._keep_sentencepiece_model)."""
    out.mkdir(parents=True)
    for item in base_dir.iterdir():
        if item.name not in TOKENIZER_FILES and item.is_file():
            os.symlink(item.resolve(), out / item.name)
    for name in TOKENIZER_FILES:
        src = adapter_dir / name if (adapter_dir / name).is_file() else base_dir / name
        if src.is_file():
            shutil.copy2(src, out / name)
    return out


def base_file_name(quant: str, tok_digest: str) -> str:
    """A file built under another seeding rule gets another name, never the same path: adapters exported onto
    the old file record its sha256 (forge.base_gguf_sha256), and serving would refuse them on a replaced one."""
    return f"base-{quant}-{tok_digest[:8]}-t{SEEDING_FORMAT}.gguf"


def cached_base_gguf(base_models_dir: Path, base_fingerprint: str, quant: str, tok_digest: str) -> BaseGGUF | None:
    folder = cache_dir_for(base_models_dir, base_fingerprint)
    path = folder / base_file_name(quant, tok_digest)
    info_path = path.with_suffix(INFO_SUFFIX)
    if not path.is_file() or not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        return None
    # size + mtime instead of re-hashing gigabytes each night; a replaced file differs in one of them
    st = path.stat()
    if info.get("size") != st.st_size or info.get("mtime_ns") != st.st_mtime_ns \
            or info.get("base_fingerprint") != base_fingerprint:
        return None
    return BaseGGUF(path, info["sha256"], quant, base_fingerprint, round(st.st_size / 2**20, 2), "cached")


def ensure_base_gguf(adapter_dir: Path, base_path: str, base_fingerprint: str, base_models_dir: Path, quant: str,
                     log=print) -> BaseGGUF:
    """The cached base GGUF for this base model, quantization and tokenizer; built on the first call only."""
    if quant not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {sorted(QUANTIZATIONS)}")
    adapter_dir = Path(adapter_dir)
    tok = tokenizer_digest(adapter_dir)
    hit = cached_base_gguf(base_models_dir, base_fingerprint, quant, tok)
    if hit:
        return hit
    t0 = time.time()
    folder = cache_dir_for(base_models_dir, base_fingerprint)
    path = folder / base_file_name(quant, tok)
    work = folder / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    log(f"building the base GGUF once for {base_fingerprint[:60]} at {quant} (cached for later exports)")
    try:
        if _is_quantized(base_path):  # a hub id or a bnb 4-bit folder: the converter needs 16-bit weights
            base_dir = load_base_16bit(base_path, work / "hf16")
        else:
            base_dir = Path(base_path)
        shadow = _shadow_dir(base_dir, adapter_dir, work / "shadow")
        f16 = convert_to_gguf(shadow, work / "base-f16.gguf", "f16")
        if quant == "f16":
            os.replace(f16, path)
        else:
            quantize_gguf(f16, path, quant)
        os.chmod(path, 0o600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    st = path.stat()
    digest = sha256_file(path)
    atomic_write_json(path.with_suffix(INFO_SUFFIX), {
        "sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "base_fingerprint": base_fingerprint,
        "quantization": quant, "tokenizer_digest": tok, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return BaseGGUF(path, digest, quant, base_fingerprint, round(st.st_size / 2**20, 2), "built",
                    round(time.time() - t0, 2))


def base_ggufs(base_models_dir: Path) -> list[Path]:
    """Every cached base GGUF (for listing and for pruning those no kept version uses)."""
    return sorted((Path(base_models_dir) / "gguf").glob("*/base-*.gguf"))
