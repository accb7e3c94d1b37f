"""Curated JSONL -> LoRA adapter (training/final): the recipe. Each stage lives in its own module:

    validate  data.py (examples, min count)        load     backends.py (unsloth | transformers + peft)
    cached?   manifest.py (fingerprint match)      fit      session.py (layout, SFTTrainer, OOM backoff, resume)
    publish   publish.py (adapter, manifest)       measure  measurement.py (guard, throughput, memory)

with checkpoints.py (seal, verify, resume), errors.py and types.py beneath them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from forge_pipeline.files import sha256_text
from forge_pipeline.training.backends import choose_backend, load_model
from forge_pipeline.training.base_model import ResolvedBase, cuda_available, resolve_base_model
from forge_pipeline.training.checkpoints import clear_checkpoints, last_complete_checkpoint, open_run, update_run
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.data import TrainingData, load_training_data
from forge_pipeline.training.errors import NonFiniteLossError, TrainingError
from forge_pipeline.training.manifest import AdapterManifest
from forge_pipeline.training.publish import build_manifest, plot_loss_curve, publish_adapter
from forge_pipeline.training.session import choose_layout, fit, run_with_oom_backoff
from forge_pipeline.training.turn_tokens import SEEDING_FORMAT, seed_turn_rows
from forge_pipeline.training.types import LogFn, MetricsFn, TrainingReport

__all__ = ["run_training", "train", "TrainingReport", "TrainingError", "NonFiniteLossError", "choose_backend",
           "run_with_oom_backoff", "plot_loss_curve", "final_dir_for"]


def final_dir_for(output_dir: Path) -> Path:
    """Where a training folder publishes its adapter (ForgeSettings.adapter_dir for the data home's)."""
    return Path(output_dir) / "final"


def fingerprint_of(cfg: TrainingConfig, base: ResolvedBase, data: TrainingData) -> str:
    return sha256_text(json.dumps({"cfg": cfg.fingerprint_fields(), "base": base.fingerprint,
                                   "train": data.train_sha256, "eval": data.eval_sha256, "format": 1,
                                   "turn_rows": SEEDING_FORMAT}, sort_keys=True))


def cached_report(final_dir: Path, fingerprint: str) -> Optional[TrainingReport]:
    manifest = AdapterManifest.read_if_exists(final_dir)
    if manifest is None or manifest.fingerprint != fingerprint or not (final_dir / "adapter_model.safetensors").exists():
        return None
    return TrainingReport(str(final_dir), "cached", manifest.backend, fingerprint, manifest.metrics,
                          str(AdapterManifest.path_in(final_dir)))


def run_training(data_path: Path, output_dir: Path, cfg: TrainingConfig, *, eval_path: Optional[Path] = None,
                 home: Optional[Path] = None, log: LogFn = print, on_metrics: Optional[MetricsFn] = None,
                 force_cpu: bool = False) -> TrainingReport:
    """Train (or resume, or reuse) the adapter for ``data_path``; returns where it is and how it went."""
    output_dir, final_dir = Path(output_dir), final_dir_for(output_dir)
    data = load_training_data(data_path, eval_path, cfg.min_examples)  # validate, before any model loads
    cuda = cuda_available() and not force_cpu
    backend = choose_backend(cfg.backend, cuda)
    home = Path(home) if home else output_dir.parent
    base = resolve_base_model(cfg.base_model, home, cuda=cuda)
    fingerprint = fingerprint_of(cfg, base, data)
    cached = cached_report(final_dir, fingerprint)  # cached?
    if cached:
        log(f"adapter in {final_dir} is up to date with the data, config and base model: reusing it")
        return cached

    output_dir.mkdir(parents=True, exist_ok=True)
    run = open_run(output_dir, fingerprint)
    resume_from = last_complete_checkpoint(output_dir, log)
    if resume_from:
        log(f"resuming from {resume_from.name}")
    log(f"backend={backend} base={base.name} ({base.source}) device={'cuda' if cuda else 'cpu'} "
        f"train={len(data.train_rows)} eval={len(data.eval_rows)}")
    t_load = time.time()
    loaded = load_model(backend, base, cfg, cuda)  # load
    load_s = round(time.time() - t_load, 2)
    # In memory only (a local or hub base is the user's); every GGUF and every reload of the base gets the same
    # rows (export/turn_rows.py, export/merge.py, evaluation/reference.py), so what is served is what trained.
    seeded = seed_turn_rows(loaded.model, loaded.tokenizer)
    if seeded:
        log("the base never trained its turn tokens (their rows are zero or sit among unused ones), so they start "
            "from trained rows: " + ", ".join(f"{t} from {s}" for t, s in seeded.items()) + " (training/turn_tokens.py)")
    t_layout = time.time()
    layout = choose_layout(cfg, backend, loaded, data.train_rows, cuda)
    layout_s = round(time.time() - t_layout, 2)
    log(f"batch layout: {layout.description}, {layout.batch_size} rows x "
        f"{layout.gradient_accumulation_steps} per step" + (f" (expected padding if padded: {layout.padding_waste:.0%})"
                                                  if layout.padding_waste is not None else ""))
    result = fit(cfg, loaded, data, layout, output_dir, backend=backend, cuda=cuda, resume_from=resume_from,  # fit
                 base_eval_loss=run.get("base_eval_loss"), log=log, on_metrics=on_metrics,
                 on_base_eval=lambda loss: update_run(output_dir, base_eval_loss=loss))
    metrics = {**result.metrics, "load_s": load_s, "layout_s": layout_s}
    manifest = build_manifest(fingerprint=fingerprint, resumed=resume_from is not None, base=base, backend=backend,
                              cuda=cuda, cfg=cfg, data=data, metrics=metrics, log_history=result.log_history,
                              seeded_turn_tokens=seeded)
    t_publish = time.time()
    publish_adapter(result.trainer, loaded.tokenizer, manifest, output_dir, final_dir)  # publish
    metrics["publish_s"] = round(time.time() - t_publish, 2)  # the report's: the manifest was sealed before
    # The evaluation's fidelity reference, from the model in memory (no second load of the base).
    from forge_pipeline.evaluation.reference_logits import write_after_training

    t_reference = time.time()
    write_after_training(result.trainer.model, loaded.tokenizer, final_dir, data.eval_path, cfg.max_seq_length, log)
    metrics["reference_logits_s"] = round(time.time() - t_reference, 2)
    clear_checkpoints(output_dir)
    log(f"adapter written to {final_dir}")  # its losses: the last progress lines, and forge train's summary
    return TrainingReport(str(final_dir), manifest.status, backend, fingerprint, metrics,
                          str(AdapterManifest.path_in(final_dir)))


def train(data_path, output_dir, base_model: Optional[str] = None, lora_rank: int = 16, lora_alpha: int = 32,
          learning_rate: float = 2e-4, num_epochs: float = 3, batch_size: int = 4, gradient_accumulation_steps: int = 4,
          eval_path=None, **options) -> Path:
    """Train a LoRA adapter and return the path of ``output_dir/final`` (the scripting entry point).

    ``options`` takes any other TrainingConfig field (max_seq_length, lora_dropout, target_modules,
    warmup_ratio, lr_scheduler_type, seed, max_steps, packing, eval_steps, save_steps, save_total_limit,
    early_stopping_patience, backend, min_examples), plus home, log, on_metrics and force_cpu.
    Settings are validated like every other entry point's (TrainingConfigError names a bad one).
    """
    from forge_pipeline.training.config import resolve_training_config

    runtime = {k: options.pop(k) for k in ("home", "log", "on_metrics", "force_cpu") if k in options}
    cfg = resolve_training_config({"base_model": base_model, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
                                   "learning_rate": learning_rate, "num_epochs": num_epochs, "batch_size": batch_size,
                                   "gradient_accumulation_steps": gradient_accumulation_steps, **options}, "cuda")
    report = run_training(Path(data_path), Path(output_dir), cfg, eval_path=eval_path, home=runtime.get("home"),
                          log=runtime.get("log", print), on_metrics=runtime.get("on_metrics"),
                          force_cpu=runtime.get("force_cpu", False))
    return Path(report.final_dir)
