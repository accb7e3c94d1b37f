"""Extraction on adversarial text: seconds per MB from 10 KB to 1 MB must stay flat (linear time).

    .venv/bin/python bench/reliability_data.py [--sizes 10000 100000 1000000]

Each input repeats one unit that made a pattern quadratic before (issue 11, item 10: ``[[`` 32 KB -> 18 s),
or that stresses markdown-it, through the whole per-note path (decode, parse, detection, redaction).
Writes bench/results/reliability_data.json: per input and size, seconds and seconds per MB, and the ratio
of the 1 MB rate to the 10 KB rate (about 1 when linear; a quadratic pattern gives ~100).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forge_pipeline.config import load_config  # noqa: E402
from forge_pipeline.extraction.note import extract_note, options_from_settings  # noqa: E402
from forge_pipeline.files import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "reliability_data.json"
UNITS = {
    "wikilink [[": "[[",
    "wikilink alias [[a|": "[[a|",
    "embed ![[": "![[",
    "comment %%a": "%%a",
    "nbsp run": "\u00a0",
    "block ids ' ^a'": " ^a",
    "tags #0": "#0",
    "api-key-like a-": "a-",
    "email-like a.": "a.",
    "emphasis *a": "*a",
    "links [a](": "[a](",
    "digits 1 ": "1 ",
    "prose": "I think the plan is fine. ",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = ap.parse_args()
    opts = options_from_settings(load_config(note_time_budget_s=3600))  # measure, never cut short
    extract_note("warm-up.md", b"I think the redactor loads once, before any timing.", opts)
    rows = []
    for name, unit in UNITS.items():
        row = {"input": name, "runs": []}
        for size in args.sizes:
            raw = ("I think " + unit * (size // len(unit.encode()))).encode()
            t = time.perf_counter()
            result = extract_note("adversarial.md", raw, opts)
            dt = time.perf_counter() - t
            row["runs"].append({"bytes": len(raw), "seconds": round(dt, 4),
                                "seconds_per_mb": round(dt / (len(raw) / 1e6), 3), "skipped": result.skipped})
            print(f"{name:24s} {len(raw):>9,d} B {dt:8.3f} s  {dt / (len(raw) / 1e6):7.2f} s/MB", flush=True)
        rates = [r["seconds_per_mb"] for r in row["runs"]]
        row["rate_ratio_largest_to_smallest"] = round(rates[-1] / rates[0], 2) if rates[0] else None
        rows.append(row)
    worst = max(r["rate_ratio_largest_to_smallest"] or 0 for r in rows)
    result = {
        "what": "extract_note (decode, markdown-it parse, detection, redaction) on one note of repeated units",
        "inputs": rows,
        "worst_rate_ratio": worst,
        "flat": worst < 3.0,
        "slowest_s_per_mb": max(run["seconds_per_mb"] for r in rows for run in r["runs"]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "note": "2 cores shared with other work: absolute times are noisy, ratios less so"},
    }
    atomic_write_json(RESULTS, result)
    print(json.dumps({k: result[k] for k in ("worst_rate_ratio", "flat", "slowest_s_per_mb")}))


if __name__ == "__main__":
    main()
