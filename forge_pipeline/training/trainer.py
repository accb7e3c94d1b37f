"""Curated JSONL -> LoRA adapter (training/final), with resume, caching, NaN guard and OOM backoff.

Backends: unsloth on CUDA (FastLanguageModel, 4-bit base, unsloth gradient checkpointing, 8-bit AdamW);
transformers + peft + trl SFTTrainer elsewhere (bitsandbytes 4-bit on CUDA without unsloth, full precision
on the CPU). Both train on prompt/completion pairs, so the loss covers the assistant turn only.
"""
from __future__ import annotations

import json
import math
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Optional

from forge_pipeline.files import atomic_write_json, read_jsonl, sha256_file, sha256_text
from forge_pipeline.training.base_model import ResolvedBase, cuda_available, resolve_base_model
from forge_pipeline.training.batch_layout import choose_padding_free, count_training_tokens
from forge_pipeline.training.checkpoints import clear_checkpoints, last_complete_checkpoint, publish_dir
from forge_pipeline.training.config import DEFAULT_CHAT_TEMPLATE, TrainingConfig

LogFn = Callable[[str], None]
MetricsFn = Callable[[dict], None]


class TrainingError(RuntimeError):
    """Training cannot run or did not produce a usable adapter; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    pass


@dataclass
class TrainingReport:
    final_dir: str
    status: str  # "trained" | "resumed" | "cached"
    backend: str
    fingerprint: str
    metrics: dict = field(default_factory=dict)
    manifest_path: str = ""


def choose_backend(requested: str, cuda: bool) -> str:
    if requested == "transformers":
        return "transformers"
    if requested == "unsloth":
        if not cuda:
            raise TrainingError("the unsloth backend needs a CUDA GPU; use backend='transformers' on the CPU")
        return "unsloth"
    if cuda:
        try:
            import importlib.util

            if importlib.util.find_spec("unsloth") is not None:
                return "unsloth"
        except (ImportError, ValueError):
            pass
    return "transformers"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "unsloth", "bitsandbytes"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _to_prompt_completion(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_backoff(run: Callable[[int, int], object], batch_size: int, grad_accum: int, log: LogFn = print):
    """Call run(batch, accum); on CUDA OOM halve the batch and double accumulation (same effective batch)."""
    while True:
        try:
            return run(batch_size, grad_accum)
        except Exception as e:  # noqa: BLE001 - only OOM is retried, everything else re-raised
            if not _is_oom(e):
                raise
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass
            if batch_size == 1:
                raise TrainingError(
                    "CUDA out of memory even at batch size 1. Remedies: lower max_seq_length, use a smaller "
                    "base model, enable 4-bit loading (unsloth / bitsandbytes), lower lora_rank, or free GPU "
                    "memory held by other processes.") from e
            batch_size, grad_accum = batch_size // 2, grad_accum * 2
            log(f"CUDA out of memory: retrying with batch_size={batch_size}, gradient_accumulation_steps={grad_accum}")


def _fingerprint(cfg: TrainingConfig, base: ResolvedBase, train_sha: str, eval_sha: str | None) -> str:
    return sha256_text(json.dumps({"cfg": cfg.fingerprint_fields(), "base": base.fingerprint,
                                   "train": train_sha, "eval": eval_sha, "format": 1}, sort_keys=True))


def _cached_report(final_dir: Path, fingerprint: str) -> Optional[TrainingReport]:
    manifest = final_dir / "manifest.json"
    if not manifest.exists() or not (final_dir / "adapter_model.safetensors").exists():
        return None
    data = json.loads(manifest.read_text())
    if data.get("fingerprint") != fingerprint:
        return None
    return TrainingReport(str(final_dir), "cached", data["backend"], fingerprint, data.get("metrics", {}),
                          str(manifest))


def _load_model(backend: str, base: ResolvedBase, cfg: TrainingConfig, cuda: bool):
    """(model with LoRA, tokenizer, what attention unsloth uses for packed rows, or None)."""
    import torch

    if backend == "unsloth":
        import unsloth  # noqa: F401  (must be imported before transformers patches apply)
        from unsloth import FastLanguageModel

        from forge_pipeline.training import unsloth_varlen

        attention = unsloth_varlen.enable()
        model, tok = FastLanguageModel.from_pretrained(base.path, max_seq_length=cfg.max_seq_length,
                                                       load_in_4bit=True, dtype=None)

        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules, bias="none", use_gradient_checkpointing="unsloth",
            random_state=cfg.seed)
        return model, tok, attention
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.path)
    if cuda:
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base.path, quantization_config=bnb, dtype=torch.bfloat16,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, attn_implementation="eager")
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tok, None  # transformers' own attention handles packed rows


def _callbacks(cfg: TrainingConfig, on_metrics: Optional[MetricsFn], has_eval: bool):
    """(callbacks, the one that times steps)"""
    from transformers import EarlyStoppingCallback, TrainerCallback

    class GuardAndReport(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            for key in ("loss", "eval_loss", "grad_norm"):
                v = logs.get(key)
                if key != "grad_norm" and isinstance(v, float) and not math.isfinite(v):
                    raise NonFiniteLossError(
                        f"{key} became {v} at step {state.global_step}: training diverged, no adapter was "
                        f"published. Lower learning_rate (now {args.learning_rate}) or check the data.")
            if on_metrics is not None:
                on_metrics({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    class Throughput(TrainerCallback):
        """Steady-state tokens/s between the end of step 3 (past compilation and allocator warm-up) and the
        last step. The GPU is synchronized only at those two marks, so the steps between run as they do
        unmeasured: the host queues the next step while the GPU finishes the last one."""

        warm_steps = 3

        def __init__(self):
            self.marks: list = []  # (time, optimizer steps done in this session)
            self.first_step = None

        def _mark(self, state):
            if cuda_sync is not None:
                cuda_sync()
            self.marks.append((time.perf_counter(), state.global_step - self.first_step))

        def on_step_end(self, args, state, control, **kwargs):
            if self.first_step is None:
                self.first_step = state.global_step - 1  # >0 after resuming from a checkpoint
            done = state.global_step - self.first_step
            if done == self.warm_steps or state.global_step == state.max_steps or control.should_training_stop:
                self._mark(state)

    cuda_sync = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda_sync = torch.cuda.synchronize
    except ImportError:
        pass
    throughput = Throughput()
    cbs = [GuardAndReport(), throughput]
    if cfg.early_stopping_patience and has_eval:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return cbs, throughput


def _choose_layout(cfg: TrainingConfig, backend: str, tok, rows: list[dict]) -> tuple[Optional[bool], Optional[float]]:
    """(padding_free for SFTConfig, or None for TRL's choice; expected padding share of padded batches).

    Only unsloth's unpacked batches are chosen here; packing is always padding-free, and the transformers
    backend keeps padded rows (its SDPA path has no varlen kernel)."""
    if cfg.padding_free is not None or cfg.packing or backend != "unsloth":
        return cfg.padding_free, None
    sample = random.Random(cfg.seed).sample(rows, min(len(rows), 512))
    lengths = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
               for r in sample]
    return choose_padding_free(lengths, cfg.batch_size, cfg.max_seq_length)


def _peak_memory_gib(cuda: bool) -> float:
    if cuda:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB -> GiB


def plot_loss_curve(log_history: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_training(data_path: Path, output_dir: Path, cfg: TrainingConfig, *, eval_path: Optional[Path] = None,
                 home: Optional[Path] = None, log: LogFn = print, on_metrics: Optional[MetricsFn] = None,
                 force_cpu: bool = False) -> TrainingReport:
    """Train (or resume, or reuse) the adapter for ``data_path``; returns where it is and how it went."""
    data_path, output_dir = Path(data_path), Path(output_dir)
    if not data_path.exists():
        raise TrainingError(f"{data_path}: training data not found; run `forge curate` first")
    train_rows = read_jsonl(data_path)
    eval_rows = read_jsonl(eval_path) if eval_path and Path(eval_path).exists() else []
    if len(train_rows) < cfg.min_examples:
        raise TrainingError(f"{data_path}: {len(train_rows)} training examples, need at least {cfg.min_examples}. "
                            "Add reflections to the vault or lower min_examples.")
    bad = [i for i, r in enumerate(train_rows, 1) if not (isinstance(r.get("messages"), list) and len(r["messages"]) >= 2)]
    if bad:
        raise TrainingError(f"{data_path}: lines {bad[:5]} have no chat messages")

    cuda = cuda_available() and not force_cpu
    backend = choose_backend(cfg.backend, cuda)
    home = Path(home) if home else output_dir.parent
    base = resolve_base_model(cfg.base_model, home, cuda=cuda)
    fingerprint = _fingerprint(cfg, base, sha256_file(data_path), sha256_file(eval_path) if eval_rows else None)
    final_dir = output_dir / "final"
    cached = _cached_report(final_dir, fingerprint)
    if cached:
        log(f"adapter in {final_dir} is up to date with the data, config and base model: reusing it")
        return cached

    output_dir.mkdir(parents=True, exist_ok=True)
    run_file = output_dir / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.exists() else {}
    if previous.get("fingerprint") != fingerprint:
        clear_checkpoints(output_dir)  # they belong to other data or settings
        atomic_write_json(run_file, {"fingerprint": fingerprint, "started": time.time()})
    resume_from = last_complete_checkpoint(output_dir, log)
    if resume_from:
        log(f"resuming from {resume_from.name}")

    log(f"backend={backend} base={base.name} ({base.source}) device={'cuda' if cuda else 'cpu'} "
        f"train={len(train_rows)} eval={len(eval_rows)}")
    t_load = time.time()
    model, tok, packed_attention = _load_model(backend, base, cfg, cuda)
    if not tok.chat_template:
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    load_s = time.time() - t_load

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    train_ds = Dataset.from_list(_to_prompt_completion(train_rows))
    eval_ds = Dataset.from_list(_to_prompt_completion(eval_rows)) if eval_rows else None
    steps_per_epoch = None
    padding_free, waste = _choose_layout(cfg, backend, tok, train_rows)
    layout = f"packed ({cfg.packing_strategy})" if cfg.packing else "padding-free" if padding_free else "padded"
    log(f"batch layout: {layout}" + (f" (expected padding if padded: {waste:.0%})" if waste is not None else ""))

    def make_trainer(batch: int, accum: int):
        nonlocal steps_per_epoch
        steps_per_epoch = max(1, math.ceil(len(train_rows) / (batch * accum)))
        per_epoch = "steps"
        args = SFTConfig(
            output_dir=str(output_dir), per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
            gradient_accumulation_steps=accum, learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_epochs,
            max_steps=cfg.max_steps, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio in transformers 5
            lr_scheduler_type=cfg.lr_scheduler_type,
            seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, logging_first_step=True,
            save_strategy=per_epoch, save_steps=cfg.save_steps or steps_per_epoch, save_total_limit=cfg.save_total_limit,
            eval_strategy=per_epoch if eval_ds is not None else "no", eval_steps=cfg.eval_steps or steps_per_epoch,
            load_best_model_at_end=bool(cfg.early_stopping_patience and eval_ds is not None),
            metric_for_best_model="eval_loss" if cfg.early_stopping_patience else None,
            max_length=cfg.max_seq_length, packing=cfg.packing, packing_strategy=cfg.packing_strategy,
            **({} if padding_free is None else {"padding_free": padding_free}),
            loss_type=cfg.loss_type, completion_only_loss=True,
            report_to="none", optim="adamw_8bit" if cuda else "adamw_torch",
            logging_nan_inf_filter=False,  # the default hides NaN losses from logs, and so from the guard
            bf16=cuda, fp16=False, gradient_checkpointing=cuda and backend != "unsloth",
            dataloader_num_workers=0, save_only_model=False, include_num_input_tokens_seen="no",
            disable_tqdm=False,
        )
        callbacks, throughput = _callbacks(cfg, on_metrics, eval_ds is not None)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tok, callbacks=callbacks)
        result["counter"] = count_training_tokens(trainer)
        result["throughput"] = throughput
        return trainer

    result = {}

    def run(batch: int, accum: int):
        trainer = make_trainer(batch, accum)
        if eval_ds is not None and "base_eval_loss" not in result and resume_from is None:
            # The LoRA update starts at zero, so this is the base model's loss on the same eval set.
            # (absent when truncation to max_seq_length left no completion token in any eval example)
            result["base_eval_loss"] = trainer.evaluate().get("eval_loss")
        t0 = time.time()
        out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        result.update(trainer=trainer, train_output=out, train_s=time.time() - t0, batch=batch, accum=accum)
        return trainer

    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    trainer = run_with_oom_backoff(run, cfg.batch_size, cfg.gradient_accumulation_steps, log)
    counter, accum = result["counter"], result["accum"]
    marks = [(t, steps, counter.tokens_through(steps * accum)) for t, steps in result["throughput"].marks]
    steady = None
    if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
        steady = round((marks[-1][2] - marks[0][2]) / (marks[-1][0] - marks[0][0]), 1)
    tokens = counter.tokens_through((trainer.state.global_step - (result["throughput"].first_step or 0)) * accum)
    final_eval = trainer.evaluate().get("eval_loss") if eval_ds is not None else None
    if final_eval is None and eval_ds is not None:
        log(f"warning: no eval example has an answer token within max_seq_length={cfg.max_seq_length}; eval loss unknown")
    if final_eval is not None and not math.isfinite(final_eval):
        raise NonFiniteLossError(f"eval loss is {final_eval}: no adapter was published")
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    metrics = {
        "train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": result["train_output"].training_loss,
        "eval_loss": final_eval,
        "base_eval_loss": result.get("base_eval_loss"),
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / result["train_s"], 1) if result["train_s"] > 0 and tokens else None,
        "steady_tokens_per_s": steady,
        "steady_steps_timed": marks[-1][1] - marks[0][1] if len(marks) >= 2 else 0,
        "train_s": round(result["train_s"], 2),
        "load_s": round(load_s, 2),
        "peak_memory_gib": _peak_memory_gib(cuda),
        "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "effective_batch_size": result["batch"] * result["accum"],
        "batch_size_used": result["batch"],
        "gradient_accumulation_used": result["accum"],
        "batch_layout": layout,
        "padding_waste_if_padded": None if waste is None else round(waste, 3),
        "packed_attention": packed_attention,
    }

    tmp = output_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "chat_template.jinja").write_text(tok.chat_template, encoding="utf-8")
    plot_loss_curve(history, tmp / "loss_curve.png")
    manifest = {
        "fingerprint": fingerprint,
        "status": "resumed" if resume_from else "trained",
        "base_model": {"name": base.name, "path": base.path, "source": base.source, "fingerprint": base.fingerprint},
        "backend": backend, "device": "cuda" if cuda else "cpu",
        "hyperparameters": cfg.model_dump(),
        "data": {"train_path": str(data_path), "train_sha256": sha256_file(data_path), "train_examples": len(train_rows),
                 "eval_path": str(eval_path) if eval_rows else None,
                 "eval_sha256": sha256_file(eval_path) if eval_rows else None, "eval_examples": len(eval_rows)},
        "metrics": metrics, "log_history": history, "versions": _versions(),
        "timings": {"load_s": metrics["load_s"], "train_s": metrics["train_s"]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    publish_dir(tmp, final_dir)
    clear_checkpoints(output_dir)
    log(f"adapter written to {final_dir} (train loss {metrics['train_loss']}, eval loss {final_eval})")
    return TrainingReport(str(final_dir), manifest["status"], backend, fingerprint, metrics, str(final_dir / "manifest.json"))


def train(data_path, output_dir, base_model: Optional[str] = None, lora_rank: int = 16, lora_alpha: int = 32,
          learning_rate: float = 2e-4, num_epochs: float = 3, batch_size: int = 4, gradient_accumulation_steps: int = 4,
          eval_path=None, **options) -> Path:
    """The seed's entry point: train a LoRA adapter and return the path of ``output_dir/final``.

    ``options`` takes any other TrainingConfig field (max_seq_length, lora_dropout, target_modules,
    warmup_ratio, lr_scheduler_type, seed, max_steps, packing, eval_steps, save_steps, save_total_limit,
    early_stopping_patience, backend, min_examples).
    """
    cfg = TrainingConfig(base_model=base_model, lora_rank=lora_rank, lora_alpha=lora_alpha, learning_rate=learning_rate,
                         num_epochs=num_epochs, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
                         **{k: v for k, v in options.items() if k not in ("home", "log", "on_metrics", "force_cpu")})
    report = run_training(Path(data_path), Path(output_dir), cfg, eval_path=eval_path, home=options.get("home"),
                          log=options.get("log", print), on_metrics=options.get("on_metrics"),
                          force_cpu=options.get("force_cpu", False))
    return Path(report.final_dir)

