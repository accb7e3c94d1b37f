"""Benchmark of the data half on this machine; writes bench/results/data_pipeline.json.

    .venv/bin/python bench/bench_data.py [--notes 10000] [--baseline REV|DIR] [--results PATH]

``--baseline REV``: an older commit of this repository (unpacked with ``git archive``; or a folder holding one), timed on the
same vault right after ours, full and incremental, in its own process: the 2 cores are shared, so only
times taken side by side compare. CPU seconds (this process and its workers) are recorded beside wall time:
on a loaded machine wall time says little about the code, and extraction parses notes in worker processes.

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
from forge_pipeline.extraction.workers import worker_count  # noqa: E402
from forge_pipeline.files import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "data_pipeline.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=10_000)
    ap.add_argument("--examples", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--baseline", help="an older commit (or a folder holding one): its extraction of the same vault is timed "
                    "right after ours (the 2 cores are shared, so absolute times move with other work)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes (default: %(default)s)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        vault = build(work / "vault", args.notes)
        cfg = load_config(home=str(work / "home"), vault=str(vault))
        if args.baseline:  # its vault must be the same bytes: built here, timed in a copy
            shutil.copytree(vault, work / "vault-baseline", symlinks=True)
        t, c = time.perf_counter(), _cpu()
        ex = TrainingDataExtractor(cfg)
        rows = ex.extract()
        full, full_cpu = time.perf_counter() - t, _cpu() - c
        _change_one_percent(vault, args.notes)
        t, c = time.perf_counter(), _cpu()
        ex2 = TrainingDataExtractor(cfg)
        ex2.extract()
        incr, incr_cpu = time.perf_counter() - t, _cpu() - c
        baseline = _baseline(_checkout(args.baseline, work / "baseline-code"), work / "vault-baseline",
                             work / "home-baseline", args.notes) if args.baseline else None
        result = {
            "extraction": {"notes": args.notes, "examples": len(rows), "full_s": round(full, 3),
                           "full_cpu_s": round(full_cpu, 3), "notes_per_s": round(args.notes / full),
                           "workers": worker_count(cfg.extract_workers, args.notes),
                           "incremental_1pct_s": round(incr, 3), "incremental_cpu_s": round(incr_cpu, 3),
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
            result["extraction"]["same_load_baseline"] = {**baseline, "ratio_full": round(full / baseline["full_s"], 3),
                                                          "ratio_full_cpu": round(full_cpu / baseline["full_cpu_s"], 3)}
        result["curation_target"] = "100,000 examples in under 60 s"
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                             "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(args.results, result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (extraction's worker processes)."""
    import resource
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _change_one_percent(vault: Path, notes: int) -> None:
    for p in random.Random(1).sample(sorted(vault.rglob("*.md")), notes // 100):
        p.write_text(p.read_text() + "\nI realize this note changed tonight, and that is fine.\n")


def _checkout(rev_or_dir: str, dest: Path) -> tuple[str, str | None]:
    """(folder holding the code, its commit): a folder as given, or a revision unpacked with git archive."""
    import io
    import subprocess
    import tarfile

    if Path(rev_or_dir).is_dir():
        return rev_or_dir, None
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", rev_or_dir], capture_output=True,
                            text=True, check=True).stdout.strip()
    tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], capture_output=True,
                         check=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return str(dest), commit


def _baseline(code_dir: tuple[str, str | None], vault: Path, home: Path, notes: int) -> dict:
    """The older checkout's full and incremental extraction of the same vault, in a process of its own."""
    import inspect
    import subprocess

    root, commit = code_dir
    # the helpers travel as source: the old checkout's own bench/ package would shadow this one
    code = "\n".join(["import random, sys, time", "from pathlib import Path", inspect.getsource(_cpu),
                      inspect.getsource(_change_one_percent), (
        "sys.path.insert(0, sys.argv[1])\n"
        "from forge_pipeline.config import load_config\n"
        "from forge_pipeline.extraction.extractor import TrainingDataExtractor\n"
        "cfg = load_config(home=sys.argv[3], vault=sys.argv[2]); t, c = time.perf_counter(), _cpu()\n"
        "rows = TrainingDataExtractor(cfg).extract(); full, full_cpu = time.perf_counter() - t, _cpu() - c\n"
        "_change_one_percent(Path(sys.argv[2]), int(sys.argv[4])); t, c = time.perf_counter(), _cpu()\n"
        "TrainingDataExtractor(cfg).extract()\n"
        "print(len(rows), full, full_cpu, time.perf_counter() - t, _cpu() - c)")])
    out = subprocess.run([sys.executable, "-c", code, root, str(vault), str(home), str(notes)],
                         capture_output=True, text=True, check=True, cwd=root).stdout.split()
    full, full_cpu, incr, incr_cpu = (round(float(x), 3) for x in out[1:5])
    return {"root": root, "commit": commit, "examples": int(out[0]), "full_s": full, "full_cpu_s": full_cpu,
            "incremental_1pct_s": incr, "incremental_cpu_s": incr_cpu, "incremental_ratio": round(incr / full, 3)}


if __name__ == "__main__":
    main()
