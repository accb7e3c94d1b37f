"""A trained PEFT LoRA adapter -> a llama.cpp LoRA adapter GGUF, written with the `gguf` library.

The layout is llama.cpp's own adapter format (what its convert_lora_to_gguf.py writes, which the PyPI
converter does not ship): ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and for
each adapted weight ``<gguf name>.lora_a`` (PEFT's A, rank x in) and ``<gguf name>.lora_b`` (PEFT's B,
out x rank) under the base architecture's GGUF tensor names. llama.cpp computes scale = alpha / rank per
tensor and adds scale * B(A x) to the base matmul; it refuses an adapter whose architecture or shapes do not
match the loaded model.

Names and per-tensor transformations come from the installed converter's own model class for the base
architecture (``conversion.get_model_class``): its ``modify_tensors`` maps the HF name and applies what the
converter does to the base weight. For Llama that is a row permutation of q_proj/k_proj (rotary layout),
which must be applied to B's rows, since permuting rows of W = B A is permuting rows of B. We hand the
converter B and check on the first adapted block that transform(B) A == transform(B A): a converter step that
is not a row-only linear map (a Gemma norm's +1, a column split) would fail that check and the export stops
with a clear error instead of writing a subtly wrong adapter.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from forge_pipeline.export.merge import ExportError

LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
FORGE_KEY_PREFIX = "forge."


@dataclass(frozen=True)
class AdapterGGUF:
    path: Path
    architecture: str
    alpha: float
    ranks: tuple[int, ...]
    tensors: int  # number of adapted weights (each a lora_a + lora_b pair)
    size_mb: float


def base_hparams(base_path: str) -> dict:
    """The base model's config as a dict (a local directory, or a hub id already in the local cache)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base_path).to_dict()
    except Exception as e:  # noqa: BLE001 - any failure means we cannot name the tensors
        raise ExportError(f"cannot read the base model's config from {base_path} ({e})") from e


def _converter_model(hparams: dict, work: Path):
    """An instance of the installed converter's model class for this architecture, pointed at a folder that
    holds only config.json (no weights are read; the instance is used for names and transforms only)."""
    import gguf
    from conversion import ModelType, get_model_architecture, get_model_class

    arch = get_model_architecture(hparams, ModelType.TEXT)
    try:
        cls = get_model_class(arch)
    except NotImplementedError as e:
        raise ExportError(f"llama.cpp's converter does not support the base architecture {arch!r}: export the "
                          f"merged model instead (forge export --merged)") from e
    (work / "config.json").write_text(json.dumps(hparams))
    model = cls(work, gguf.LlamaFileType.MOSTLY_F16, work / "unused.gguf", hparams=hparams, eager=True,
                dry_run=True)
    return model, gguf.MODEL_ARCH_NAMES[cls.model_arch]


def _pairs(state: dict) -> dict[str, dict[str, object]]:
    """{"model.layers.0.self_attn.q_proj": {"A": tensor, "B": tensor}} from a PEFT state dict; anything that
    is not a LoRA A/B matrix (DoRA magnitudes, fully trained modules, biases) is refused by name."""
    pairs: dict[str, dict[str, object]] = {}
    for key, tensor in state.items():
        m = LORA_KEY.match(key)
        if not m:
            raise ExportError(f"adapter tensor {key!r} is not a LoRA A/B matrix; llama.cpp adapters carry only "
                              f"those (DoRA, trained embeddings or modules_to_save need the merged export: "
                              f"forge export --merged)")
        pairs.setdefault(m["module"], {})[m["ab"]] = tensor
    incomplete = [k for k, v in pairs.items() if set(v) != {"A", "B"}]
    if incomplete:
        raise ExportError(f"adapter has lora_A without lora_B (or the reverse) for {incomplete[:3]}")
    return pairs


def _peft_scale(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling for one module: lora_alpha / r (or / sqrt(r) with rsLoRA), honouring per-module patterns."""
    def pattern(key: str, default):
        for pat, value in (config.get(key) or {}).items():
            if re.search(rf"(^|\.){re.escape(pat)}$", module) or re.fullmatch(pat, module):
                return value
        return default

    alpha = float(pattern("alpha_pattern", config["lora_alpha"]))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _block_id(name: str) -> int | None:
    return next((int(p) for p in name.split(".") if p.isdecimal()), None)


def write_adapter_gguf(adapter_dir: Path, base_path: str, out_file: Path, metadata: dict[str, str] | None = None,
                       outtype: str = "f16") -> AdapterGGUF:
    """Convert ``adapter_dir`` (adapter_model.safetensors + adapter_config.json) for the base at ``base_path``.

    ``metadata`` values are written as string keys under ``forge.`` (lineage: fingerprints and hashes only,
    never training text). ``outtype`` f16 (default; ~84 MB for an 8B r16 adapter on 7 projections) or f32.
    """
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    adapter_dir, out_file = Path(adapter_dir), Path(out_file)
    cfg_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise ExportError(f"{adapter_dir}: no adapter_config.json / adapter_model.safetensors; run `forge train` first")
    config = json.loads(cfg_path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise ExportError(f"{cfg_path}: a {config.get('peft_type')} adapter{' with DoRA' if config.get('use_dora') else ''}"
                          f" cannot be a llama.cpp LoRA adapter; use forge export --merged")
    if outtype not in ("f16", "f32"):
        raise ExportError(f"adapter outtype must be f16 or f32, not {outtype!r}")
    np_dtype = np.float16 if outtype == "f16" else np.float32
    pairs = _pairs(load_file(str(weights), device="cpu"))
    if not pairs:
        raise ExportError(f"{weights}: the adapter holds no LoRA tensors")
    alpha = float(config["lora_alpha"])

    hparams = base_hparams(base_path)
    with tempfile.TemporaryDirectory(prefix="forge-lora-") as work, torch.inference_mode():
        model, arch = _converter_model(hparams, Path(work))
        out_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_file.with_name(out_file.name + ".partial")
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(f"{adapter_dir.name} LoRA")
        for key, value in sorted((metadata or {}).items()):
            if value is not None:
                writer.add_string(FORGE_KEY_PREFIX + key, str(value))
        ranks, checked = set(), False
        for module in sorted(pairs, key=lambda m: (_block_id(m) or 0, m)):
            a = pairs[module]["A"].float()  # (rank, in)
            b = pairs[module]["B"].float()  # (out, rank)
            rank = a.shape[0]
            if b.shape[1] != rank:
                raise ExportError(f"{module}: lora_A rank {rank} != lora_B rank {b.shape[1]}")
            # llama.cpp scales by alpha / rank; fold any other PEFT scaling (rsLoRA, per-module alpha) into B
            b = b * (_peft_scale(config, module, rank) / (alpha / rank))
            hf_name, bid = module + ".weight", _block_id(module)
            try:
                mapped = list(model.modify_tensors(b, hf_name, bid))
            except (ValueError, KeyError) as e:
                raise ExportError(f"the converter cannot place adapter weight {hf_name} ({e})") from e
            if len(mapped) != 1 or tuple(mapped[0][1].shape) != tuple(b.shape):
                raise ExportError(f"the converter splits or reshapes {hf_name}; this adapter needs the merged export")
            name, b_out = mapped[0]
            if not checked:  # the transform must be row-only and linear, so that it commutes with "times A"
                full = list(model.modify_tensors(b @ a, hf_name, bid))[0][1]
                if not torch.allclose(b_out @ a, full, rtol=1e-4, atol=1e-6):
                    raise ExportError(f"the converter transforms {hf_name} in a way a LoRA pair cannot follow; "
                                      f"use the merged export")
                checked = True
            writer.add_tensor(f"{name}.lora_a", a.numpy().astype(np_dtype))
            writer.add_tensor(f"{name}.lora_b", b_out.contiguous().numpy().astype(np_dtype))
            ranks.add(rank)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o600)  # trained on private notes
        os.replace(tmp, out_file)
    return AdapterGGUF(out_file, arch, alpha, tuple(sorted(ranks)), len(pairs),
                       round(out_file.stat().st_size / 2**20, 2))


def read_adapter_metadata(path: Path) -> dict:
    """general.* / adapter.* / forge.* string and number fields of a GGUF (no tensors read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith(("general.", "adapter.", FORGE_KEY_PREFIX)):
            try:
                out[key] = field.contents()
            except Exception:  # noqa: BLE001 - array fields we do not need
                continue
    return out


def adapter_base_problems(adapter_gguf: Path, base_gguf: Path, base_sha256: str | None = None) -> list[str]:
    """Why the adapter does not fit the base GGUF (empty when it fits): architecture, the recorded base
    sha256, and every lora_a/lora_b shape against the base tensor it adapts. Reads headers only, through
    serving's header reader: gguf.GGUFReader decodes the whole vocabulary first, 17.0-18.1 s for the embedded
    Gemma's f16 base and an adapter against 0.17 s (bench/results/gguf_reads.json), 20 s of the CPU main
    job's export (main_job_cpu.json); the 8B's 128k tokens and 280k merges likely made it most of the H100
    nightly's 7.6 s adapter export (not broken down there)."""
    from serving.gguf_header import read_gguf_header

    adapter, base = read_gguf_header(Path(adapter_gguf)), read_gguf_header(Path(base_gguf))
    meta = adapter.metadata
    problems = []
    if meta.get("general.type") != "adapter":
        problems.append(f"{Path(adapter_gguf).name} is not an adapter GGUF (general.type={meta.get('general.type')!r})")
    base_arch = base.metadata.get("general.architecture")
    if meta.get("general.architecture") != base_arch:
        problems.append(f"adapter architecture {meta.get('general.architecture')!r} != base {base_arch!r}")
    recorded = meta.get("forge.base_gguf_sha256")
    if base_sha256 and recorded and recorded != base_sha256:
        problems.append(f"adapter was made for base sha256 {recorded[:16]}..., this base is {base_sha256[:16]}...")
    shapes = {t.name: [int(x) for x in t.shape] for t in base.tensors}  # ggml order: ne[0] = row length
    for t in adapter.tensors:
        if not t.name.endswith((".lora_a", ".lora_b")):
            continue
        target = t.name.rsplit(".", 1)[0]
        ne = [int(x) for x in t.shape]
        if target not in shapes:
            problems.append(f"{target}: not a tensor of the base model")
        elif t.name.endswith(".lora_a") and ne[0] != shapes[target][0]:
            problems.append(f"{t.name}: input size {ne[0]} != base {shapes[target][0]}")
        elif t.name.endswith(".lora_b") and ne[1] != shapes[target][1]:
            problems.append(f"{t.name}: output size {ne[1]} != base {shapes[target][1]}")
        if len(problems) >= 5:
            break
    return problems
