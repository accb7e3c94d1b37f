"""The README's main job, timed, appended to bench/results/main_job_cpu.json ("runs").

    python -m bench.main_job LABEL

Runs `dg launch --job forge_job` from the repository root (DAGSTER_HOME unset: the repository's dagster.yaml,
storage under FORGE_HOME/dagster) with a fresh FORGE_HOME, then reads the stage timings the pipeline itself
recorded (the adapter's manifest, the export's manifest, the evaluation's report) and the candidate's probe
answers. Run it alone on the machine: the training steps dominate and move with the load.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "main_job_cpu.json"


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    home = Path("/tmp/forge-main-job-bench")
    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"FORGE_HOME": str(home)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    started = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    t = time.perf_counter()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "dg"), "launch", "--job", "forge_job"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = round(time.perf_counter() - t, 1)
    (home / "main_job.log").write_text(proc.stdout + proc.stderr)
    from forge_pipeline.config import load_config

    settings = load_config(home=home)
    adapter = json.loads((settings.adapter_dir / "manifest.json").read_text())
    export = json.loads(next(settings.models_dir.glob("*/manifest.json")).read_text())
    report = json.loads(next(settings.evaluation_dir.glob("*/report.json")).read_text())
    decision = json.loads(next(settings.evaluation_dir.glob("*/decision.json")).read_text())
    cand = report["models"]["candidate"]
    probes = cand["probes"]
    metrics = adapter.get("metrics", {})
    row = {"version": f"{commit} ({label})", "rc": proc.returncode, "s": wall, "measured": started,
           "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
           "command": "python -m bench.main_job (dg launch --job forge_job, fresh FORGE_HOME)",
           "training_s": {k: metrics.get(k) for k in ("load_s", "train_s", "base_eval_s", "reference_logits_s")
                          if metrics.get(k) is not None},
           "global_step": metrics.get("global_step"),
           "export_timings_s": export.get("timings"), "export_validation": {k: export.get("validation", {}).get(k)
                                                                          for k in ("loads", "parity_by")},
           "evaluation_timings_s": report.get("timings"),
           "candidate": {"eval_loss": cand.get("eval_loss"), "base_eval_loss": report["models"]["base"].get("eval_loss"),
                         "prompt_gain": (sum(cand["prompt_gains"]) / len(cand["prompt_gains"]))
                         if cand.get("prompt_gains") else None,
                         "probe_answers_ended": sum(p.get("finish_reason") == "stop" for p in probes),
                         "probes": len(probes),
                         "mean_completion_tokens": round(sum(p.get("completion_tokens", 0) for p in probes) / len(probes), 1)},
           "deploy": decision.get("deploy"), "reasons": decision.get("reasons")}
    data = json.loads(RESULTS.read_text())
    data["runs"].append(row)
    from forge_pipeline.files import atomic_write_json

    atomic_write_json(RESULTS, data)
    print(json.dumps(row, indent=1))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
