"""GPU evidence for the training path, in one command on the H100 (see ../shared/gpu/README.md):

  1. a random-weight Llama-3.1-8B-architecture model (bare_unsloth_bench.py make);
  2. the bare unsloth peer at 4x512 and 4x2048 (bare_unsloth_bench.py unsloth);
  3. the project's entry point with the unsloth backend and with the transformers backend, same shapes;
  4. the unsloth backend with packing on reflection-length examples (100-400 tokens), 4 x 2048.

Each run is its own process (unsloth patches transformers globally). Results: one JSON per run appended
to OUT/gpu_training_runs.jsonl as soon as it exists (bench/results/gpu_training_h100.json summarizes one such file).
    python -m bench.gpu.run_training_bench MODEL_DIR BARE_BENCH_PY OUT_DIR [full|explore|repeat|repeat2|once|skip|profile]

`explore` skips the transformers backend and adds the layout variants (padding-free off; packing with the
wrapped strategy) that chose the defaults. `repeat` runs bare, forge 4x512 and forge 4x2048 in turn three times, then
forge packed once: the side-by-side figures with their spread; `repeat2` the same alternation twice, without packed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], log: Path) -> list[dict]:
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}  ({time.time() - t:.0f} s, exit {proc.returncode})\n{proc.stderr[-4000:]}\n")
    rows = []
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # trainer and unsloth logs also print {...} lines
        if isinstance(row, dict) and "mode" in row:
            rows.append(row)
    if proc.returncode != 0:
        rows.append({"cmd": cmd[-4:], "error": proc.stderr.strip().splitlines()[-1:] or ["?"], "exit": proc.returncode})
    return rows


def build_plan(name: str, model_dir: str, bare: str) -> list[list[str]]:
    shape = [sys.executable, "-m", "bench.gpu.train_shape", model_dir, "--backend"]
    plan = [] if (Path(model_dir) / "config.json").exists() else [[sys.executable, bare, "make", model_dir]]
    packed = shape + ["unsloth", "--seq", "2048", "--packing"]
    skips = ["--skip", "0,auto"]  # 0: every layer recomputed, as bare unsloth; auto: forge's default
    profile = [sys.executable, "-m", "bench.gpu.profile_steps", model_dir]
    if name == "skip":  # checkpoint_skip_layers 0 against auto, bare unsloth before and after
        return plan + [[sys.executable, bare, "unsloth", model_dir], shape + ["unsloth", "--seq", "512,2048", *skips],
                       packed[:-3] + ["--seq", "1024,2048", "--packing", *skips],
                       [sys.executable, bare, "unsloth", model_dir]]
    if name == "profile":  # where a 4x512 step's time goes, forge (like for like) against bare (~2 x 60 s)
        return plan + [profile + ["bare", "--seq", "512"], profile + ["forge", "--seq", "512", "--skip", "0"]]
    if name in ("repeat", "repeat2", "once"):  # bare and forge alternating: 4x512 moves +-20% run to run; forge
        # like for like (0) and with its default (auto), one process a round (the imports paid once); `once`: one
        # round, beside timed nightlies in a short lease
        for _ in range({"repeat": 3, "repeat2": 2, "once": 1}[name]):
            plan.append([sys.executable, bare, "unsloth", model_dir])
            plan.append(shape + ["unsloth", "--seq", "512,2048", *skips])
        return plan + [packed + skips] if name == "repeat" else plan
    plan.append([sys.executable, bare, "unsloth", model_dir])
    backends = ("unsloth",) if name == "explore" else ("unsloth", "transformers")
    plan += [shape + [backend, "--seq", seq] for backend in backends for seq in ("512", "2048")]
    if name != "explore":
        return plan + [packed]
    plan += [packed + ["--packing-strategy", strategy] for strategy in ("bfd", "wrapped")]
    return plan + [shape + ["unsloth", "--seq", seq, "--padding-free", "off"] for seq in ("512", "2048")]


def main() -> None:
    model_dir, bare, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    plan = build_plan(sys.argv[4] if len(sys.argv) > 4 else "full", model_dir, bare)
    out.mkdir(parents=True, exist_ok=True)
    runs, log = out / "gpu_training_runs.jsonl", out / "gpu_training.log"
    for cmd in plan:
        for row in run(cmd, log):
            with runs.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
