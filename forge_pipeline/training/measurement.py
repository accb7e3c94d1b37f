"""What a training run measures and guards while it runs: the NaN guard and metrics stream, steady-state
throughput, peak memory, library versions; and the callback that seals each checkpoint after its save."""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from forge_pipeline.training.checkpoints import seal_checkpoint
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.errors import NonFiniteLossError
from forge_pipeline.training.types import MetricsFn

WARM_STEPS = 3  # throughput is timed from the end of this step: past compilation and allocator warm-up


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "unsloth", "bitsandbytes"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def reset_peak_memory(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(cuda: bool) -> float:
    if cuda:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB -> GiB


@dataclass
class Throughput:
    """Marks (time, optimizer steps done in this session) at the end of step WARM_STEPS and at the last
    step. The GPU is synchronized only at those two marks, so the steps between run as they do unmeasured:
    the host queues the next step while the GPU finishes the last one."""

    marks: list
    first_step: Optional[int] = None  # global step before this session's first (>0 after a resume)

    def steady_tokens_per_s(self, tokens_through_step) -> tuple[Optional[float], int]:
        """(tokens/s between the marks, steps timed); tokens_through_step(n) counts the first n steps' tokens."""
        if len(self.marks) < 2 or self.marks[-1][0] <= self.marks[0][0]:
            return None, 0
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return round((tokens_through_step(s1) - tokens_through_step(s0)) / (t1 - t0), 1), s1 - s0


def make_callbacks(cfg: TrainingConfig, on_metrics: Optional[MetricsFn], has_eval: bool, output_dir: Path):
    """(callbacks for the trainer, the Throughput they fill)."""
    from transformers import EarlyStoppingCallback, TrainerCallback

    throughput = Throughput(marks=[])
    cuda_sync = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda_sync = torch.cuda.synchronize
    except ImportError:
        pass

    class GuardAndReport(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            for key in ("loss", "eval_loss"):
                v = logs.get(key)
                if isinstance(v, float) and not math.isfinite(v):
                    raise NonFiniteLossError(
                        f"{key} became {v} at step {state.global_step}: training diverged, no adapter was "
                        f"published. Lower learning_rate (now {args.learning_rate}) or check the data.")
            if on_metrics is not None:
                on_metrics({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    class TimeSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if throughput.first_step is None:
                throughput.first_step = state.global_step - 1
            done = state.global_step - throughput.first_step
            if done == WARM_STEPS or state.global_step == state.max_steps or control.should_training_stop:
                if cuda_sync is not None:
                    cuda_sync()
                throughput.marks.append((time.perf_counter(), done))

    class SealCheckpoints(TrainerCallback):
        """Called after the trainer has written (and rotated) a checkpoint: record what it holds."""

        def on_save(self, args, state, control, **kwargs):
            seal_checkpoint(Path(output_dir) / f"checkpoint-{state.global_step}")

    cbs = [GuardAndReport(), TimeSteps(), SealCheckpoints()]
    if cfg.early_stopping_patience and has_eval:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return cbs, throughput
