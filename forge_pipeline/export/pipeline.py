"""Trained adapter -> a versioned, validated GGUF under models/<version>/, plus manifest.json.

Two kinds (``export_model(merged=...)``):
- adapter (default, the nightly): a llama.cpp LoRA adapter GGUF (``adapter-<name>-<fp>.gguf``, ~84 MB for an
  8B r16) that serving applies to a base GGUF converted once and cached under base_models_dir;
- merged: adapter merged into a 16-bit copy of the base, converted and quantized to one full GGUF (for
  Ollama / LM Studio, or a base that cannot take adapters), with an Ollama Modelfile beside it.

A version is the export time plus the adapter's fingerprint; re-exporting the same adapter as the same kind
and quantization reuses the existing version (status "cached"). After each export, old versions are pruned
(keep the newest N plus whatever serving uses). Everything published is 0600: it was trained on private notes.
(A little over 300 lines: the two export kinds share one versioning, caching and pruning path, kept together.)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

from forge_pipeline.export.base_gguf import cached_base_gguf, ensure_base_gguf, tokenizer_digest
from forge_pipeline.export.gguf import QUANTIZATIONS, convert_to_gguf, default_quantization, quantize_gguf
from forge_pipeline.export.lora_gguf import adapter_base_problems, base_hparams, write_adapter_gguf
from forge_pipeline.export.manifest import (
    BaseGGUFRef,
    ExportManifest,
    LastExport,
    Lineage,
    SourceAdapter,
    list_versions,
    read_last_export,
    to_stored,
)
from forge_pipeline.export.merge import ExportError, adapter_base_path, merge_only
from forge_pipeline.export.modelfile import write_modelfile
from forge_pipeline.export.retention import (
    DEFAULT_KEEP,
    PruneReport,
    check_free_space,
    export_space_needed,
    params_from_config,
    prune_versions,
)
from forge_pipeline.export.validate import (
    PARITY_BY_EVALUATION,
    PARITY_TOLERANCE,
    degeneracy,
    eval_sequences,
    hf_perplexity,
    parity_ok,
)
from forge_pipeline.files import read_jsonl, sha256_file, sha256_text
from forge_pipeline.training.manifest import AdapterManifest, AdapterManifestError

ADAPTER_STAGES = ("base", "adapter", "validate")
MERGED_STAGES = ("merge", "convert", "quantize", "validate")
EXPORT_STAGES = MERGED_STAGES  # kept for callers written before adapter exports


def export_stages(merged: bool) -> tuple[str, ...]:
    return MERGED_STAGES if merged else ADAPTER_STAGES


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
    kind: str = "adapter"  # "adapter" | "merged"
    base_gguf: str | None = None  # adapter exports: the base GGUF to serve it on (absolute path)
    base_sha256: str | None = None
    modelfile: str | None = None  # merged exports: the Ollama Modelfile beside the GGUF
    pruned: PruneReport | None = None


@dataclass(frozen=True)
class AdapterInfo:
    """What an export needs from the training side's adapter manifest (read in this one place)."""

    fingerprint: str
    base_name: str | None
    base_path: str
    base_fingerprint: str
    data_sha256: str | None = None
    eval_sha256: str | None = None
    training_config_sha256: str | None = None
    eval_loss: float | None = None
    base_eval_loss: float | None = None


def adapter_info(adapter_dir: Path, home: Path | None = None) -> AdapterInfo:
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ExportError(f"{adapter_dir}: no trained adapter here; run `forge train` first")
    try:
        m = AdapterManifest.read_if_exists(adapter_dir)
    except AdapterManifestError as e:
        raise ExportError(str(e)) from e
    if m is None:  # an adapter trained elsewhere: identify it by its weights and its base's path
        base_path = adapter_base_path(adapter_dir)
        return AdapterInfo(sha256_file(adapter_dir / "adapter_model.safetensors"), base_path, base_path,
                           "path:" + base_path)
    return AdapterInfo(m.fingerprint, m.base_model.name, m.base_model_path(home), m.base_model.fingerprint,
                       m.data.train_sha256, m.data.eval_sha256,
                       sha256_text(json.dumps(m.hyperparameters, sort_keys=True)), m.eval_loss, m.base_eval_loss)


def forge_version() -> str:
    try:
        return importlib_metadata.version("forge-pipeline")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def find_export(models_dir: Path, adapter_fp: str, quant: str, kind: str = "merged") -> Path | None:
    """The newest version holding this adapter as this kind and quantization, with its files present."""
    for manifest, folder in reversed(list_versions(models_dir)):
        if manifest.source_adapter.fingerprint == adapter_fp and manifest.quantization == quant \
                and manifest.kind == kind and manifest.gguf_path(folder).exists():
            return folder / "manifest.json"
    return None


def _report(manifest: ExportManifest, folder: Path, status: str, home: Path, pruned=None) -> ExportReport:
    base = manifest.base_path(home)
    return ExportReport(str(manifest.gguf_path(folder)), manifest.version, manifest.quantization, manifest.sha256,
                        manifest.size_mb, status, manifest.validation, manifest.timings, str(folder / "manifest.json"),
                        manifest.kind, str(base) if base else None, manifest.base.sha256 if manifest.base else None,
                        str(folder / manifest.modelfile) if manifest.modelfile else None, pruned)


def validate_export(gguf: Path, reference_dir: Path, eval_rows: list[dict], quant: str,
                    tolerances: dict | None = None, n_prompts: int = 3, lora: Path | None = None,
                    adapter_dir: Path | None = None, tokenizer_dir: Path | None = None, parity: bool = True) -> dict:
    """Load and answer through llama-cpp-python in a child process, and compare perplexity on the eval set
    with the HF model at ``reference_dir`` (merged model; or the base with ``adapter_dir`` applied, when
    ``lora`` is an adapter GGUF applied to the base ``gguf``). ``parity=False`` leaves the perplexity
    comparison to the nightly evaluation (``PARITY_BY_EVALUATION``)."""
    prompts = [r["messages"][:-1] for r in eval_rows[:n_prompts]] or \
              [[{"role": "user", "content": "What did I learn this week?"}]]
    seqs = eval_sequences(tokenizer_dir or reference_dir, eval_rows) if eval_rows and parity else []
    # serving's probe: llama.cpp in a child process (a crash is a finding, not our death), the adapter applied
    # as serving applies it
    from serving.probe import probe_gguf

    probe = probe_gguf(Path(gguf), lora=lora, prompts=prompts, max_tokens=48, seqs=seqs, n_ctx=1024,
                       timeout_s=1800)
    result = {"loads": bool(probe.get("ok")), "has_chat_template": bool(probe.get("chat_template")),
              "chat_template": probe.get("chat_template"), "answers": probe.get("answers") or [],
              "degenerate": [degeneracy(a) for a in probe.get("answers") or []], "load_error": probe.get("error")}
    if not parity:
        result["parity_by"] = PARITY_BY_EVALUATION
    elif seqs and probe.get("perplexity") is not None:
        hf_ppl = hf_perplexity(reference_dir, seqs, adapter_dir=adapter_dir)
        g_ppl = probe["perplexity"]
        ok, ratio, tol = parity_ok(g_ppl, hf_ppl, quant, tolerances)
        result.update(hf_perplexity=round(hf_ppl, 4), gguf_perplexity=round(g_ppl, 4), perplexity_ratio=round(ratio, 4),
                      parity_tolerance=tol, parity_ok=ok, parity_sequences=len(seqs))
    return result


def _space_needed(adapter_dir: Path, info: AdapterInfo, quant: str, merged: bool, base_cached: bool) -> int:
    adapter_bytes = (adapter_dir / "adapter_model.safetensors").stat().st_size
    if not merged and base_cached:
        return int(adapter_bytes * 1.1)
    n = params_from_config(base_hparams(info.base_path))
    if n is None:
        return int(adapter_bytes * 1.1)
    cfg = Path(info.base_path) / "config.json"
    quantized = not cfg.is_file() or "quantization_config" in json.loads(cfg.read_text())
    return export_space_needed(n, quant, merged=merged, base_cached=base_cached, base_quantized=quantized,
                               adapter_bytes=adapter_bytes)


def export_model(adapter_dir, models_dir, quant: str | None = None, name: str = "companion", eval_path=None,
                 work_dir=None, keep_merged: bool = False, tolerances: dict | None = None,
                 log: Callable[[str], None] = print, on_stage: Callable[[str], None] | None = None, *,
                 merged: bool = False, home=None, base_models_dir=None, serving_dir=None,
                 keep_versions: int = DEFAULT_KEEP, protected: Iterable[Path] = (),
                 validate: bool = True, parity: bool = True, system_prompt: str | None = None) -> ExportReport:
    """Export the adapter at ``adapter_dir`` into ``models_dir``/<version>/.

    quant: the GGUF type of the merged file, or of the base an adapter applies to; None chooses it from the
    base model (default_quantization). home / base_models_dir / serving_dir default to the FORGE_HOME layout
    around models_dir (its parent, parent/base_models, parent/serving). on_stage hears each of
    export_stages(merged) as it begins (the CLI's progress bar). After the export, versions beyond the newest
    ``keep_versions`` are pruned, never one serving uses or one in ``protected``. system_prompt: written as
    SYSTEM into the merged export's Ollama Modelfile (the prompt the examples were trained with).
    ``parity=False`` (an adapter export that the nightly evaluation will judge) validates that the file loads
    and answers in a child process but leaves fidelity to the evaluation: its KLD against the trainer's
    reference logits is a stronger test than this perplexity ratio, which loaded the Hugging Face model a
    second time for it (28-39 s of the CPU main job's export, main_job_cpu.json). A merged export keeps it.
    """
    adapter_dir, models_dir = Path(adapter_dir), Path(models_dir)
    home = Path(home) if home else models_dir.parent
    base_models_dir = Path(base_models_dir) if base_models_dir else home / "base_models"
    serving_dir = Path(serving_dir) if serving_dir else home / "serving"
    stage = on_stage or (lambda name: None)
    info = adapter_info(adapter_dir, home)
    quant = quant or default_quantization(info.base_name)
    if quant not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {sorted(QUANTIZATIONS)}")
    kind = "merged" if merged else "adapter"
    prune = lambda: prune_versions(models_dir, home, keep=keep_versions, serving_dir=serving_dir,  # noqa: E731
                                   protected=protected, base_models_dir=base_models_dir)
    existing = find_export(models_dir, info.fingerprint, quant, kind)
    if existing:
        manifest = ExportManifest.read(existing.parent)
        if manifest.kind == "merged" or (manifest.base_path(home) and manifest.base_path(home).exists()):
            log(f"{existing.parent.name} already holds this adapter ({kind}, {quant}): reusing it")
            if validate and manifest.kind == "adapter":
                _reuse_with_parity_policy(manifest, existing.parent, parity, adapter_dir, info, eval_path, quant,
                                          tolerances, home, log)
            LastExport(manifest=to_stored(existing, home), status="cached").write(models_dir)
            return _report(manifest, existing.parent, "cached", home, prune())

    base_cached = merged or cached_base_gguf(base_models_dir, info.base_fingerprint, quant,
                                             tokenizer_digest(adapter_dir)) is not None
    check_free_space(models_dir, _space_needed(adapter_dir, info, quant, merged, base_cached), f"a {kind} export")
    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + info.fingerprint[:8]
    out_dir = models_dir / version
    timings: dict = {}

    @contextmanager
    def step(name: str):  # one place announces a stage and times it, so the two cannot drift apart
        stage(name)
        t = time.time()
        yield
        timings[f"{name}_s"] = round(time.time() - t, 2)

    eval_rows = read_jsonl(eval_path) if validate and eval_path and Path(eval_path).exists() else []
    lineage = Lineage(adapter_fingerprint=info.fingerprint, data_sha256=info.data_sha256, eval_sha256=info.eval_sha256,
                      training_config_sha256=info.training_config_sha256, base_fingerprint=info.base_fingerprint,
                      base_model=info.base_name, forge_version=forge_version())
    try:
        if merged:
            final, validation, base_ref = _export_merged(adapter_dir, info, models_dir, out_dir, version, name, quant,
                                                         eval_rows, tolerances, work_dir, keep_merged, step, validate)
            modelfile = write_modelfile(final, system_prompt)
            validation["modelfile"] = {"family": modelfile.family, "template_written": modelfile.template_written,
                                       "stops": modelfile.stops, "problem": modelfile.problem}
        else:
            final, validation, base_ref = _export_adapter(adapter_dir, info, out_dir, name, quant, eval_rows,
                                                          tolerances, lineage, base_models_dir, home, step, log,
                                                          validate, parity)
        os.chmod(final, 0o600)
        manifest = ExportManifest(
            version=version, kind=kind, file=final.name, quantization=quant, sha256=sha256_file(final),
            size_mb=round(final.stat().st_size / 2**20, 2), base=base_ref,
            source_adapter=SourceAdapter(path=to_stored(adapter_dir, home), fingerprint=info.fingerprint,
                                         eval_loss=info.eval_loss, base_eval_loss=info.base_eval_loss,
                                         base_model=info.base_name),
            lineage=lineage, validation=validation, timings=timings,
            parity_tolerances=tolerances or PARITY_TOLERANCE, modelfile="Modelfile" if merged else None,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.write(out_dir)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # never leave a half-made version behind
        raise
    LastExport(manifest=to_stored(out_dir / "manifest.json", home), status="exported").write(models_dir)
    log(f"exported {final} ({manifest.size_mb} MB, {kind}, {quant})")
    return _report(manifest, out_dir, "exported", home, prune())


def _reuse_with_parity_policy(manifest: ExportManifest, folder: Path, parity: bool, adapter_dir: Path,
                              info: AdapterInfo, eval_path, quant: str, tolerances, home: Path, log) -> None:
    """A reused adapter export answers to this caller's fidelity policy, not to the one it was made under: the
    job (parity=False) leaves fidelity to the evaluation even if a `forge export` measured it before; `forge
    export` (parity=True) measures it now if the job's export skipped it."""
    v = dict(manifest.validation or {})
    if not parity and v.get("parity_by") != PARITY_BY_EVALUATION:
        v["parity_by"] = PARITY_BY_EVALUATION
    elif parity and v.get("parity_by") == PARITY_BY_EVALUATION:
        log("measuring the perplexity parity the nightly export left to the evaluation")
        rows = read_jsonl(eval_path) if eval_path and Path(eval_path).exists() else []
        v = validate_export(manifest.base_path(home), Path(info.base_path), rows, quant, tolerances,
                            lora=manifest.gguf_path(folder), adapter_dir=adapter_dir, tokenizer_dir=adapter_dir)
    else:
        return
    manifest.validation = v
    manifest.write(folder)


def _export_adapter(adapter_dir, info: AdapterInfo, out_dir: Path, name: str, quant: str, eval_rows, tolerances,
                    lineage: Lineage, base_models_dir: Path, home: Path, step, log, validate: bool,
                    parity: bool = True):
    with step("base"):
        base = ensure_base_gguf(adapter_dir, info.base_path, info.base_fingerprint, base_models_dir, quant, log=log)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"adapter-{name}-{info.fingerprint[:8]}.gguf"
    with step("adapter"):
        meta = {k: v for k, v in lineage.model_dump().items() if v is not None}
        write_adapter_gguf(adapter_dir, info.base_path, final, {**meta, "base_gguf_sha256": base.sha256,
                                                                "base_quantization": quant})
        problems = adapter_base_problems(final, base.path, base.sha256)
        if problems:
            raise ExportError(f"the adapter GGUF does not fit its base {base.path}: " + "; ".join(problems))
    validation: dict = {}
    if validate:
        with step("validate"):
            validation = validate_export(base.path, Path(info.base_path), eval_rows, quant, tolerances, lora=final,
                                         adapter_dir=adapter_dir, tokenizer_dir=adapter_dir, parity=parity)
    base_ref = BaseGGUFRef(path=to_stored(base.path, home), sha256=base.sha256, quantization=quant,
                           base_fingerprint=info.base_fingerprint, size_mb=base.size_mb)
    return final, validation, base_ref


def _export_merged(adapter_dir, info: AdapterInfo, models_dir: Path, out_dir: Path, version: str, name: str, quant: str, eval_rows,
                   tolerances, work_dir, keep_merged: bool, step, validate: bool):
    work = Path(work_dir) if work_dir else models_dir / f".work-{version}"
    try:
        with step("merge"):
            merged_dir = merge_only(adapter_dir, work / "merged", base_model_path=info.base_path)
        with step("convert"):
            f16 = convert_to_gguf(merged_dir, work / f"{name}-f16.gguf", "f16")
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / f"{name}-{quant}.gguf"
        with step("quantize"):
            if quant == "f16":
                shutil.move(str(f16), str(final))
            else:
                quantize_gguf(f16, final, quant)
        validation: dict = {}
        if validate:
            with step("validate"):
                validation = validate_export(final, merged_dir, eval_rows, quant, tolerances)
    finally:
        if not keep_merged:
            shutil.rmtree(work, ignore_errors=True)
    return final, validation, None


def last_export(models_dir: Path, home: Path | None = None) -> dict | None:
    """The latest export's manifest as a dict plus its folder ("dir"); None before any. Prefer
    manifest.read_last_export, which returns the typed ExportManifest."""
    models_dir = Path(models_dir)
    found = read_last_export(models_dir, Path(home) if home else models_dir.parent)
    if found is None:
        return None
    manifest, folder = found
    return manifest.model_dump(mode="json") | {"dir": str(folder)}
