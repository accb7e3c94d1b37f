"""What a training run measures, guards and reports while it runs: the NaN guard and metrics stream, the
progress lines ("step 12/24, loss 3.412, ETA 01:05"), steady-state throughput, peak memory, library versions;
the callback that seals each checkpoint after its save; and the quieting of library chatter (progress bars,
warnings) that forge's own progress lines replace unless verbose."""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from forge_pipeline.training.checkpoints import seal_checkpoint
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.errors import NonFiniteLossError
from forge_pipeline.training.types import LogFn, MetricsFn

WARM_STEPS = 3  # throughput is timed from the end of this step: past compilation and allocator warm-up

# What silences Hugging Face's progress bars and info logs, read when those libraries are imported (so set
# before): hub downloads, datasets' map bars ("Tokenizing train dataset"), transformers' logger (at ERROR the
# Trainer also leaves out its step and evaluation bars: session.sft_args).
QUIET_LIBRARY_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                     "TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
                     "TOKENIZERS_PARALLELISM": "false"}


def quiet_libraries(verbose: bool, own_bars: bool = True) -> None:
    """Library chatter (deprecation warnings, Hugging Face progress bars, transformers' info logs) off in this
    process and the ones it starts, unless ``verbose``; forge's own progress lines and messages stay. Call it
    before transformers, datasets, tqdm or torch are imported (the CLI's main, the Pipes trainer's entry). A
    variable the user set wins. ``own_bars=False`` (a process that draws no bar of its own: training) turns
    every tqdm bar off, also those a library draws with no switch (transformers' "Converting and de-quantizing
    GGUF tensors" when the embedded base loads): tqdm reads TQDM_DISABLE when it is imported."""
    if verbose:
        return
    if not own_bars:
        os.environ.setdefault("TQDM_DISABLE", "1")
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|torch|peft|trl|accelerate)")
    for var, value in QUIET_LIBRARY_ENV.items():
        os.environ.setdefault(var, value)


def format_duration(seconds: float) -> str:
    """mm:ss, or h:mm:ss from an hour."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@dataclass
class Progress:
    """forge's training progress, one line per logging step (TrainingConfig.logging_steps: every few steps)
    and one at the last step: "step 12/24, loss 3.412, ETA 01:05", "step 24/24, loss 3.107, done in 02:11";
    evaluations as "base model eval loss 4.487 (before training)" and "step 12/24, eval loss 3.902". The ETA
    is this session's time per step so far (a resumed run counts from its resume) times the steps left."""

    log: LogFn
    started_at: Optional[float] = None
    start_step: int = 0
    last_reported: Optional[int] = None
    last_loss: Optional[float] = None
    last_eval_step: Optional[int] = None

    def begin(self, step: int, now: float) -> None:
        self.started_at, self.start_step = now, step

    def on_loss(self, step: int, max_steps: int, loss: float, now: float) -> None:
        if self.started_at is None or step == self.last_reported:
            return
        elapsed, done = now - self.started_at, step - self.start_step
        if step >= max_steps:
            tail = f"done in {format_duration(elapsed)}"
        elif done > 0:
            tail = f"ETA {format_duration(elapsed / done * (max_steps - step))}"
        else:
            tail = "ETA unknown"
        self.last_reported, self.last_loss = step, loss
        self.log(f"step {step}/{max_steps}, loss {loss:.3f}, {tail}")

    def end(self, step: int, max_steps: int, now: float) -> None:
        """The closing line when the last step's loss was not reported (early stopping ends between logs)."""
        if self.started_at is None or step == self.last_reported:
            return
        loss = "" if self.last_loss is None else f", loss {self.last_loss:.3f} at step {self.last_reported}"
        stopped = " (stopped early)" if step < max_steps else ""
        self.last_reported = step
        self.log(f"step {step}/{max_steps}{loss}, done in {format_duration(now - self.started_at)}{stopped}")

    def on_eval(self, step: int, max_steps: int, eval_loss: float) -> None:
        if step == self.last_eval_step:  # the final evaluation repeats the last step's (same weights)
            return
        self.last_eval_step = step
        if self.started_at is None:
            self.log(f"base model eval loss {eval_loss:.3f} (before training)")
        else:
            self.log(f"step {step}/{max_steps}, eval loss {eval_loss:.3f}")


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


def make_callbacks(cfg: TrainingConfig, on_metrics: Optional[MetricsFn], has_eval: bool, output_dir: Path,
                   log: Optional[LogFn] = None):
    """(callbacks for the trainer, the Throughput they fill). ``log`` receives the progress lines (Progress)."""
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

    progress = Progress(log) if log is not None else None

    class ReportProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.begin(state.global_step, time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps or control.should_training_stop:
                control.should_log = True  # the last step's loss, even off the logging_steps grid

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if isinstance(logs.get("loss"), (int, float)):
                progress.on_loss(state.global_step, state.max_steps, logs["loss"], time.perf_counter())
            elif isinstance(logs.get("eval_loss"), (int, float)):
                progress.on_eval(state.global_step, state.max_steps, logs["eval_loss"])

        def on_train_end(self, args, state, control, **kwargs):
            progress.end(state.global_step, state.max_steps, time.perf_counter())

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

    cbs = [GuardAndReport(), TimeSteps(), SealCheckpoints(), *([ReportProgress()] if progress else [])]
    if cfg.early_stopping_patience and has_eval:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return cbs, throughput
