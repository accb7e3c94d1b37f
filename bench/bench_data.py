"""Benchmark of the data half on this machine; writes bench/results/data_pipeline.json.

    .venv/bin/python bench/bench_data.py [--notes 10000]

Measures: full extraction of a 10,000-note synthetic vault (time, notes/s), the incremental re-run after
1% of the notes changed (target: under 10% of the full time), and near-duplicate curation of 10,000 and
100,000 examples (target: 100,000 in under 60 s, growing about linearly).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.synthetic_vault import build, synthetic_examples  # noqa: E402
from forge_pipeline.config import load_config  # noqa: E402
from forge_pipeline.curation.curate import curate_examples  # noqa: E402
from forge_pipeline.extraction.extractor import TrainingDataExtractor  # noqa: E402
from forge_pipeline.files import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "data_pipeline.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=10_000)
    ap.add_argument("--examples", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--baseline", help="a checkout of an older commit: its extraction of the same vault is timed "
                    "right after ours (the 2 cores are shared, so absolute times move with other work)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        vault = build(work / "vault", args.notes)
        cfg = load_config(home=str(work / "home"), vault=str(vault))
        t = time.perf_counter()
        ex = TrainingDataExtractor(cfg)
        rows = ex.extract()
        full = time.perf_counter() - t
        changed = random.Random(1).sample(sorted(vault.rglob("*.md")), args.notes // 100)
        for p in changed:
            p.write_text(p.read_text() + "\nI realize this note changed tonight, and that is fine.\n")
        t = time.perf_counter()
        ex2 = TrainingDataExtractor(cfg)
        ex2.extract()
        incr = time.perf_counter() - t
        baseline = _baseline(args.baseline, vault, work / "home-baseline") if args.baseline else None
        result = {
            "extraction": {"notes": args.notes, "examples": len(rows), "full_s": round(full, 3),
                           "notes_per_s": round(args.notes / full), "incremental_1pct_s": round(incr, 3),
                           "incremental_ratio": round(incr / full, 3), "target_ratio": 0.10,
                           "incremental_notes_parsed": ex2.get_stats()["notes_parsed"]},
            "curation": [],
        }
        for n in args.examples:
            data = synthetic_examples(n)
            t = time.perf_counter()
            train, evals, report = curate_examples(data, cfg)
            dt = time.perf_counter() - t
            result["curation"].append({"examples": n, "seconds": round(dt, 2), "per_1000_s": round(dt / n * 1000, 3),
                                       "dropped": report.dropped_by_reason, "kept": len(train) + len(evals)})
        if baseline:
            result["extraction"]["same_load_baseline"] = {**baseline, "ratio_full": round(full / baseline["full_s"], 3)}
        result["curation_target"] = "100,000 examples in under 60 s"
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                             "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(RESULTS, result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _baseline(root: str, vault: Path, home: Path) -> dict:
    import subprocess

    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from forge_pipeline.config import load_config; "
            "from forge_pipeline.extraction.extractor import TrainingDataExtractor; "
            "cfg = load_config(home=sys.argv[3], vault=sys.argv[2]); t = time.perf_counter(); "
            "rows = TrainingDataExtractor(cfg).extract(); print(len(rows), time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, root, str(vault), str(home)], capture_output=True, text=True,
                         check=True, cwd=root).stdout.split()
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"root": root, "commit": commit or None, "examples": int(out[0]), "full_s": round(float(out[1]), 3)}


if __name__ == "__main__":
    main()
