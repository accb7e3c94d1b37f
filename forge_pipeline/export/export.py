"""Adapter -> versioned GGUF: models/<version>/<name>-<quant>.gguf plus manifest.json, validated.

A version is the export time plus the adapter's fingerprint; re-exporting the same adapter at the same
quantization reuses the existing version (status "cached")."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.export.gguf import QUANTIZATIONS, convert_to_gguf, quantize_gguf
from forge_pipeline.export.gguf_probe import run_probe
from forge_pipeline.export.merge import ExportError, merge_only
from forge_pipeline.export.validate import PARITY_TOLERANCE, degeneracy, eval_sequences, hf_perplexity, parity_ok
from forge_pipeline.files import atomic_write_json, read_jsonl, sha256_file

MANIFEST = "manifest.json"
LAST_EXPORT = "last_export.json"  # which version the latest export produced or reused


@dataclass
class ExportReport:
    gguf_path: str
    version: str
    quantization: str
    sha256: str
    size_mb: float
    status: str  # "exported" | "cached"
    validation: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    manifest_path: str = ""


def _adapter_fingerprint(adapter_dir: Path) -> str:
    manifest = adapter_dir / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["fingerprint"]
    return sha256_file(adapter_dir / "adapter_model.safetensors")


def find_export(models_dir: Path, adapter_fp: str, quant: str) -> Path | None:
    for m in sorted(Path(models_dir).glob(f"*/{MANIFEST}"), reverse=True):
        data = json.loads(m.read_text())
        if data.get("source_adapter", {}).get("fingerprint") == adapter_fp and data.get("quantization") == quant \
                and (m.parent / data["file"]).exists():
            return m
    return None


def _report_from_manifest(path: Path, status: str) -> ExportReport:
    d = json.loads(path.read_text())
    return ExportReport(str(path.parent / d["file"]), d["version"], d["quantization"], d["sha256"], d["size_mb"],
                        status, d.get("validation", {}), d.get("timings", {}), str(path))


def validate_export(gguf: Path, merged_dir: Path, eval_rows: list[dict], quant: str,
                    tolerances: dict | None = None, n_prompts: int = 3) -> dict:
    prompts = [r["messages"][:-1] for r in eval_rows[:n_prompts]] or \
              [[{"role": "user", "content": "What did I learn this week?"}]]
    seqs = eval_sequences(merged_dir, eval_rows) if eval_rows else []
    probe = run_probe(gguf, prompts, seqs)  # llama.cpp in a child process: a crash is a finding, not our death
    result = {"loads": probe["loads"], "has_chat_template": bool(probe.get("chat_template")),
              "chat_template": probe.get("chat_template"), "answers": probe.get("answers", []),
              "degenerate": [degeneracy(a) for a in probe.get("answers", [])], "load_error": probe.get("error")}
    if seqs and probe.get("gguf_perplexity") is not None:
        hf_ppl = hf_perplexity(merged_dir, seqs)
        g_ppl = probe["gguf_perplexity"]
        ok, ratio, tol = parity_ok(g_ppl, hf_ppl, quant, tolerances)
        result.update(hf_perplexity=round(hf_ppl, 4), gguf_perplexity=round(g_ppl, 4), perplexity_ratio=round(ratio, 4),
                      parity_tolerance=tol, parity_ok=ok, parity_sequences=len(seqs))
    return result


EXPORT_STAGES = ("merge", "convert", "quantize", "validate")


def export_model(adapter_dir, models_dir, quant: str = "q4_k_m", name: str = "companion", eval_path=None,
                 work_dir=None, keep_merged: bool = False, tolerances: dict | None = None,
                 log: Callable[[str], None] = print, on_stage: Callable[[str], None] | None = None) -> ExportReport:
    """on_stage, when given, hears each of EXPORT_STAGES as it begins (the CLI's progress bar)."""
    adapter_dir, models_dir = Path(adapter_dir), Path(models_dir)
    stage = on_stage or (lambda name: None)
    if quant not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {sorted(QUANTIZATIONS)}")
    if not (adapter_dir / "adapter_config.json").exists():
        raise ExportError(f"{adapter_dir}: no trained adapter here; run `forge train` first")
    adapter_fp = _adapter_fingerprint(adapter_dir)
    existing = find_export(models_dir, adapter_fp, quant)
    if existing:
        log(f"{existing.parent.name} already holds this adapter at {quant}: reusing it")
        atomic_write_json(models_dir / LAST_EXPORT, {"manifest": str(existing), "status": "cached"})
        return _report_from_manifest(existing, "cached")

    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + adapter_fp[:8]
    out_dir = models_dir / version
    work = Path(work_dir) if work_dir else models_dir / f".work-{version}"
    timings = {}

    @contextmanager
    def step(name: str):  # one place announces a stage and times it, so the two cannot drift apart
        stage(name)
        t = time.time()
        yield
        timings[f"{name}_s"] = round(time.time() - t, 2)

    try:
        with step("merge"):
            merged = merge_only(adapter_dir, work / "merged")
        with step("convert"):
            f16 = convert_to_gguf(merged, work / f"{name}-f16.gguf", "f16")
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / f"{name}-{quant}.gguf"
        with step("quantize"):
            if quant == "f16":
                shutil.move(str(f16), str(final))
            else:
                quantize_gguf(f16, final, quant)
        with step("validate"):
            eval_rows = read_jsonl(eval_path) if eval_path and Path(eval_path).exists() else []
            validation = validate_export(final, merged, eval_rows, quant, tolerances)
        adapter_manifest = json.loads((adapter_dir / "manifest.json").read_text()) if (adapter_dir / "manifest.json").exists() else {}
        manifest = {
            "version": version, "file": final.name, "quantization": quant,
            "sha256": sha256_file(final), "size_mb": round(final.stat().st_size / 2**20, 2),
            "source_adapter": {"path": str(adapter_dir), "fingerprint": adapter_fp,
                               "eval_loss": adapter_manifest.get("metrics", {}).get("eval_loss"),
                               "base_eval_loss": adapter_manifest.get("metrics", {}).get("base_eval_loss"),
                               "base_model": adapter_manifest.get("base_model", {}).get("name")},
            "validation": validation, "timings": timings, "parity_tolerances": tolerances or PARITY_TOLERANCE,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(out_dir / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # never leave a half-made version behind
        raise
    finally:
        if not keep_merged:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(models_dir / LAST_EXPORT, {"manifest": str(out_dir / MANIFEST), "status": "exported"})
    log(f"exported {final} ({manifest['size_mb']} MB, {quant})")
    return _report_from_manifest(out_dir / MANIFEST, "exported")


def last_export(models_dir: Path) -> dict | None:
    """The manifest of the version the latest export produced or reused, with its folder; None before any."""
    pointer = Path(models_dir) / LAST_EXPORT
    if not pointer.exists():
        return None
    manifest = Path(json.loads(pointer.read_text())["manifest"])
    return json.loads(manifest.read_text()) | {"dir": str(manifest.parent)} if manifest.exists() else None

