"""The SFT session: batch layout, TRL's SFTTrainer, the base model's eval loss, training with OOM backoff and
resume, and the measured metrics (`fit` returns them in a `Fit`)."""
from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from forge_pipeline.training.backends import (
    LoadedModel,
    checkpoint_every_layer,
    size_skip_planner_for_one_row,
    uncheckpointed_layers,
)
from forge_pipeline.training.batch_layout import (
    choose_packing,
    choose_padding_free,
    count_training_tokens,
    examples_per_row,
)
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.data import TrainingData, to_prompt_completion
from forge_pipeline.training.errors import NonFiniteLossError, TrainingError, is_out_of_memory
from forge_pipeline.training.measurement import make_callbacks, peak_memory_gib, reset_peak_memory
from forge_pipeline.training.types import LogFn, MetricsFn


@dataclass(frozen=True)
class Layout:
    packing: bool
    padding_free: Optional[bool]  # for SFTConfig; None: TRL's choice
    gradient_accumulation_steps: int
    description: str  # "packed (bfd)" | "padding-free" | "padded"
    padding_waste: Optional[float]  # expected padding share of padded batches, when measured
    batch_size: int  # rows per micro-batch
    examples_per_row: float = 1.0  # packed: expected examples in a row, so an epoch is rows / this


@dataclass
class Fit:
    trainer: Any
    metrics: dict
    log_history: list


def run_with_oom_backoff(run: Callable[[int, int], object], batch_size: int, grad_accum: int, log: LogFn = print,
                         relieve: Optional[Callable[[], int]] = None):
    """Call run(batch, accum); on CUDA OOM first ``relieve()`` (layers that kept their activations recompute
    them again; it returns how many changed) and retry at the same batch when it changed something, else halve
    the batch (rounded up) and raise accumulation so that a step still sees at least as many rows. ``relieve``
    also puts back the weights the failed attempt trained (fit's after_oom)."""
    while True:
        try:
            return run(batch_size, grad_accum)
        except Exception as e:  # noqa: BLE001 - only OOM is retried, everything else re-raised
            if not is_out_of_memory(e):
                raise
        # Outside the except block: the error's traceback holds the failed attempt's frames and their tensors,
        # which are only collectable (and their cached blocks freeable) once it is gone.
        gc.collect()
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass
        relieved = relieve() if relieve is not None else 0
        if relieved:
            log(f"CUDA out of memory with {relieved} layers keeping their activations: every layer recomputes "
                f"them again (checkpoint_skip_layers); retrying with batch_size={batch_size}")
            continue
        if batch_size == 1:
            raise TrainingError(
                "CUDA out of memory even at batch size 1. Remedies: lower max_seq_length, use a smaller "
                "base model, enable 4-bit loading (unsloth / bitsandbytes), lower lora_rank, or free GPU "
                "memory held by other processes.")
        # half the rows per micro-batch, rounded up, and enough accumulation for at least the rows per
        # step there were (a packed layout's odd batches: 5 x 1 -> 3 x 2, not 2 x 2)
        rows = batch_size * grad_accum
        batch_size = (batch_size + 1) // 2
        grad_accum = math.ceil(rows / batch_size)
        log(f"CUDA out of memory: retrying with batch_size={batch_size}, gradient_accumulation_steps={grad_accum}")


def keep_trainable(model) -> Callable[[], None]:
    """A CPU copy of the trainable (LoRA) weights now, and the function that puts them back: an attempt that
    ran out of memory after some optimizer steps had already changed them, and the retry must train from where
    the run began (the adapter a run at the retry's batch gives, which its fingerprint claims). 42M parameters
    for the 8B at r16."""
    kept = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}

    def restore() -> None:
        import torch

        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in kept:
                    p.copy_(kept[name])

    return restore


def choose_layout(cfg: TrainingConfig, backend: str, loaded: LoadedModel, rows: list[dict], cuda: bool) -> Layout:
    """Packed, padding-free or padded rows. Unset settings are decided from the examples' token lengths
    (a sample of 512): packing by batch_layout.choose_packing, padding-free (unsloth's unpacked batches
    only; packing is always padding-free and the transformers backend keeps padded rows) by
    choose_padding_free."""
    accum, batch = cfg.gradient_accumulation_steps, cfg.batch_size
    needs_lengths = (cfg.packing is None and cuda) or bool(cfg.packing) or (cfg.padding_free is None and backend == "unsloth")
    lengths = []
    if needs_lengths:
        tok = loaded.tokenizer
        sample = random.Random(cfg.seed).sample(rows, min(len(rows), 512))
        lengths = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
                   for r in sample]
    packing = bool(cfg.packing)
    if cfg.packing is None and cuda:
        fast = (loaded.packed_attention or "").startswith("torch varlen flash")
        choice = choose_packing(lengths, cfg.batch_size, accum, cfg.max_seq_length, fast_packed_attention=fast)
        packing, accum, batch = choice.packing, choice.gradient_accumulation_steps, choice.batch_size
        if packing:
            return Layout(True, cfg.padding_free, accum, f"packed ({cfg.packing_strategy})", None, batch,
                          choice.examples_per_row)
    if packing:  # set by hand: the rows and accumulation as configured
        return Layout(True, cfg.padding_free, accum, f"packed ({cfg.packing_strategy})", None, batch,
                      examples_per_row(lengths, cfg.max_seq_length))
    if cfg.padding_free is not None or backend != "unsloth":
        return Layout(False, cfg.padding_free, accum, "padding-free" if cfg.padding_free else "padded", None, batch)
    padding_free, waste = choose_padding_free(lengths, cfg.batch_size, cfg.max_seq_length)
    return Layout(False, padding_free, accum, "padding-free" if padding_free else "padded", waste, batch)


def sft_args(cfg: TrainingConfig, layout: Layout, output_dir: Path, batch: int, accum: int, steps_per_epoch: int,
             has_eval: bool, cuda: bool, backend: str):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir), per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
        gradient_accumulation_steps=accum, learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        lr_scheduler_type=cfg.lr_scheduler_type,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps or steps_per_epoch, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no", eval_steps=cfg.eval_steps or steps_per_epoch,
        load_best_model_at_end=bool(cfg.early_stopping_patience and has_eval),
        metric_for_best_model="eval_loss" if cfg.early_stopping_patience else None,
        max_length=cfg.max_seq_length, packing=layout.packing, packing_strategy=cfg.packing_strategy,
        **({} if layout.padding_free is None else {"padding_free": layout.padding_free}),
        loss_type=cfg.loss_type, completion_only_loss=True,
        # In-process tokenization for small sets on unsloth: its default pools up to 8 workers for each of the
        # six dataset maps (train and eval: tokenize, labels, pack), each pool forked from a process holding
        # the 8B. unsloth reads a config 1 as "in-process" (unsloth/dataset_num_proc.py); TRL and datasets>=4.1
        # read 1 as Pool(1), so the transformers backend keeps None, which is in-process there.
        **({"dataset_num_proc": 1} if backend == "unsloth" and steps_per_epoch * batch * accum < 5000 else {}),
        report_to="none", optim="adamw_8bit" if cuda else "adamw_torch",
        logging_nan_inf_filter=False,  # the default hides NaN losses from logs, and so from the guard
        bf16=cuda, fp16=False, gradient_checkpointing=cuda and backend != "unsloth",
        dataloader_num_workers=0, save_only_model=False, include_num_input_tokens_seen="no",
        disable_tqdm=None,  # transformers' logger decides: bars at its default level, none when quieted
    )


def fit(cfg: TrainingConfig, loaded: LoadedModel, data: TrainingData, layout: Layout, output_dir: Path, *,
        backend: str, cuda: bool, resume_from: Optional[Path], base_eval_loss: Optional[float],
        on_base_eval: Callable[[Optional[float]], None], log: LogFn, on_metrics: Optional[MetricsFn]) -> Fit:
    """Train (from ``resume_from`` when given). The base model's eval loss is measured once, before the first
    step of a fresh run, and handed to ``on_base_eval`` to be kept for a resume; a resumed run reports the
    ``base_eval_loss`` kept then."""
    from datasets import Dataset
    from trl import SFTTrainer

    train_ds = Dataset.from_list(to_prompt_completion(data.train_rows))
    eval_ds = Dataset.from_list(to_prompt_completion(data.eval_rows)) if data.eval_rows else None
    has_eval = eval_ds is not None

    restore_weights = keep_trainable(loaded.model)

    def after_oom() -> int:
        restore_weights()  # the failed attempt's steps changed them: the retry trains from where the run began
        return checkpoint_every_layer(loaded.model) if backend == "unsloth" else 0

    def session(batch: int, accum: int) -> Fit:
        nonlocal base_eval_loss
        # packed rows hold several examples each: an epoch (the default save and eval interval) is the rows'
        # count, not the examples' (it was 3.3 epochs on the 8B nightly's data, so no mid-run checkpoint)
        rows = math.ceil(len(data.train_rows) / max(1.0, layout.examples_per_row))  # unpacked: 1 per row
        steps_per_epoch = max(1, math.ceil(rows / (batch * accum)))
        callbacks, throughput = make_callbacks(cfg, on_metrics, has_eval, output_dir, log=log)
        t_setup = time.time()
        trainer = SFTTrainer(model=loaded.model, processing_class=loaded.tokenizer, callbacks=callbacks,
                             args=sft_args(cfg, layout, output_dir, batch, accum, steps_per_epoch, has_eval, cuda, backend),
                             train_dataset=train_ds, eval_dataset=eval_ds)
        if trainer.args.disable_tqdm:  # quiet: without bars transformers prints each log as a raw dict instead
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        # what the trainer does, not what was asked: unsloth may turn packing off
        one_row = getattr(trainer, "padding_free", None)
        if backend == "unsloth" and (one_row if one_row is not None else (layout.packing or layout.padding_free)):
            size_skip_planner_for_one_row(loaded.model, batch * cfg.max_seq_length)
        counter = count_training_tokens(trainer)
        setup_s = time.time() - t_setup  # the datasets tokenized (and packed) by SFTTrainer
        t_base = time.time()
        if has_eval and base_eval_loss is None and resume_from is None:
            # The LoRA update starts at zero, so this is the base model's loss on the same eval set.
            # (absent when truncation to max_seq_length left no completion token in any eval example)
            base_eval_loss = trainer.evaluate().get("eval_loss")
            on_base_eval(base_eval_loss)
        base_eval_s = time.time() - t_base
        t0 = time.time()
        out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_s = time.time() - t0
        steady, timed = throughput.steady_tokens_per_s(lambda steps: counter.tokens_through(steps * accum))
        tokens = counter.tokens_through((trainer.state.global_step - (throughput.first_step or 0)) * accum)
        return Fit(trainer, {
            "train_loss_mean": out.training_loss, "tokens_seen": tokens,
            "tokens_per_s": round(tokens / train_s, 1) if train_s > 0 and tokens else None,
            "steady_tokens_per_s": steady, "steady_steps_timed": timed, "train_s": round(train_s, 2),
            "effective_batch_size": batch * accum, "batch_size_used": batch, "gradient_accumulation_used": accum,
            "setup_s": round(setup_s, 2), "base_eval_s": round(base_eval_s, 2),
        }, trainer.state.log_history)

    reset_peak_memory(cuda)
    result = run_with_oom_backoff(session, layout.batch_size, layout.gradient_accumulation_steps, log, relieve=after_oom)
    trainer, history = result.trainer, result.log_history
    t_final = time.time()
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), None)
    if has_eval and last_eval is not None and last_eval.get("step") == trainer.state.global_step \
            and not trainer.args.load_best_model_at_end:
        final_eval = last_eval["eval_loss"]  # evaluated at this very step already: same weights, same eval set
    else:
        final_eval = trainer.evaluate().get("eval_loss") if has_eval else None
    final_eval_s = time.time() - t_final
    if final_eval is None and has_eval:
        log(f"warning: no eval example has an answer token within max_seq_length={cfg.max_seq_length}; eval loss unknown")
    if final_eval is not None and not math.isfinite(final_eval):
        raise NonFiniteLossError(f"eval loss is {final_eval}: no adapter was published")
    train_losses = [h["loss"] for h in history if "loss" in h]
    result.metrics = {
        "train_loss": train_losses[-1] if train_losses else None, "eval_loss": final_eval,
        "base_eval_loss": base_eval_loss, "global_step": trainer.state.global_step, "epochs": trainer.state.epoch,
        **result.metrics, "final_eval_s": round(final_eval_s, 2),
        "peak_memory_gib": peak_memory_gib(cuda), "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "batch_layout": layout.description,
        "padding_waste_if_padded": None if layout.padding_waste is None else round(layout.padding_waste, 3),
        "packed_attention": loaded.packed_attention,
        **({"uncheckpointed_layers": uncheckpointed_layers(loaded.model)} if backend == "unsloth" else {}),
    }
    return result
