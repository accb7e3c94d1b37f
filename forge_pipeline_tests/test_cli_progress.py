"""Training progress as a user reads it: `forge train` prints "step x/N, loss L, ETA mm:ss" lines and one
rounded summary; the libraries' progress bars and raw metric dicts only with --verbose."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forge_pipeline.training.measurement import Progress, format_duration

FORGE = str(Path(sys.executable).with_name("forge"))
STEP = re.compile(r"^step (\d+)/(\d+), loss (\d+\.\d{3}), (ETA|done in) (\d\d):(\d\d)$")
TQDM_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")  # tqdm's "40%|████      | 2/5 [00:01<...]"
RAW_METRICS = ("metrics {", "{'loss'", "{'eval_loss'", "{'train_runtime'")


def test_progress_lines_and_eta_from_elapsed_time():
    lines = []
    p = Progress(lines.append)
    p.on_eval(0, 10, 4.48650407)  # before training: the base model's loss
    p.begin(0, now=100.0)
    p.on_loss(2, 10, 3.14159, now=104.0)  # 2 s a step, 8 steps left
    p.on_loss(2, 10, 3.14159, now=104.5)  # the same step again (the forced last-step log): once only
    p.on_eval(5, 10, 3.0)
    p.on_eval(5, 10, 3.0)  # the final evaluation of the same weights: once only
    p.on_loss(10, 10, 2.5, now=131.0)
    assert lines == ["base model eval loss 4.487 (before training)", "step 2/10, loss 3.142, ETA 00:16",
                     "step 5/10, eval loss 3.000", "step 10/10, loss 2.500, done in 00:31"]
    resumed = []
    r = Progress(resumed.append)
    r.begin(40, now=0.0)  # a resumed run times only its own steps
    r.on_loss(41, 400, 1.0, now=30.0)
    r.end(45, 400, now=200.0)  # early stopping between two logs
    assert resumed == ["step 41/400, loss 1.000, ETA 2:59:30",
                       "step 45/400, loss 1.000 at step 41, done in 03:20 (stopped early)"]
    assert format_duration(59.6) == "01:00" and format_duration(-3) == "00:00"


def train(home, base, *extra):
    return subprocess.run([FORGE, "--home", str(home), "train", "--base-model", str(base), "--max-steps", "5",
                           "--batch-size", "4", "--gradient-accumulation-steps", "1", "--max-seq-length", "384",
                           "--logging-steps", "2", *extra],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_forge_train_prints_step_loss_eta_and_no_library_bars_unless_verbose(curated, tiny_base):
    home = curated.home_dir
    r = train(home, tiny_base)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    steps = [STEP.match(line) for line in r.stdout.splitlines() if line.startswith("step ") and "eval loss" not in line]
    assert all(steps), r.stdout
    # logged every 2 steps (and the first), plus the last step although 5 is off that grid
    assert [int(m[1]) for m in steps] == [1, 2, 4, 5] and {int(m[2]) for m in steps} == {5}
    assert [m[4] for m in steps] == ["ETA", "ETA", "ETA", "done in"]
    # the losses shown are the trainer's own, as its manifest records them (an independent record)
    history = json.loads((home / "training" / "final" / "manifest.json").read_text())["log_history"]
    logged = {h["step"]: h["loss"] for h in history if "loss" in h}
    assert {int(m[1]): float(m[3]) for m in steps} == {s: round(v, 3) for s, v in logged.items()}
    assert re.search(r"^base model eval loss \d+\.\d{3} \(before training\)$", r.stdout, re.M)
    assert not any(raw in out for raw in RAW_METRICS), out[-3000:]
    assert not TQDM_BAR.search(r.stderr) and "examples/s" not in r.stderr, r.stderr[-3000:]
    # the summary: rounded numbers, once, and the next command
    summary = r.stdout[r.stdout.index("adapter trained: "):]
    assert re.search(r"eval loss \d+\.\d{3} \(base model \d+\.\d{3}, [+-]\d+\.\d%\), last train loss \d+\.\d{3}",
                     summary), summary
    assert "next: forge export" in summary

    loud = train(home, tiny_base, "--verbose", "--seed", "7")  # another seed: trained again, not reused
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert TQDM_BAR.search(loud.stderr) and "{'loss'" in loud.stdout  # the detectors above do detect them
    assert STEP.match(next(line for line in loud.stdout.splitlines() if line.startswith("step 1/")))


@pytest.mark.parametrize("own_bars, verbose, bar_drawn", [(False, False, False), (True, False, True), (False, True, True)])
def test_a_training_process_draws_no_library_bar_unless_verbose(own_bars, verbose, bar_drawn):
    """A bar drawn with plain tqdm and no switch (transformers' GGUF de-quantization does this when the
    embedded base loads) is off in a process without bars of its own (`forge train`, the Pipes trainer);
    forge's own bars (extract, export) stay in the other commands."""
    code = (f"from forge_pipeline.training.measurement import quiet_libraries; quiet_libraries({verbose}, {own_bars}); "
            "from tqdm.auto import tqdm; list(tqdm(range(3), desc='Converting and de-quantizing GGUF tensors...'))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TQDM_", "FORGE_VERBOSE"))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert bool(TQDM_BAR.search(r.stderr)) is bar_drawn, r.stderr


@pytest.mark.parametrize("verbose", ["", "1"])
def test_dagster_step_processes_quiet_hugging_face_bars_unless_verbose(verbose):
    """Export and evaluation load models inside the Dagster step process (`dg launch`, a run worker): importing
    the definitions turns transformers' "Loading weights" bars off there, unless FORGE_VERBOSE."""
    code = ("import forge_pipeline.definitions; from transformers.utils import logging; "
            "print(logging.is_progress_bar_enabled())")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "FORGE_VERBOSE"))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**env, "FORGE_VERBOSE": verbose})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ("True" if verbose else "False")
