"""bench/results/reliability.json: issue 11's attacks replayed, in one file.

    .venv/bin/python -m bench.reliability            # run both replays, then combine
    .venv/bin/python -m bench.reliability --combine  # combine the two result files already there

The serving attacks run against a real server on the embedded Gemma (bench/reliability_serving.py: pass/fail
per attack, /health p99 under 100 concurrent streams, RSS before/after); the data attacks run the whole
per-note path over adversarial vault text from 10 KB to 1 MB (bench/reliability_data.py: seconds per MB must
stay flat). CI runs the tests (test_serving_reliability.py, test_hostile_notes.py), not this.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    if "--combine" not in sys.argv:
        for mod in ("bench.reliability_serving", "bench.reliability_data"):
            subprocess.run([sys.executable, "-m", mod], check=True)
    serving = json.loads((RESULTS / "reliability_serving.json").read_text())
    data = json.loads((RESULTS / "reliability_data.json").read_text())
    out = {
        "serving": {k: serving[k] for k in ("passed", "total", "health_under_100_streams_s",
                                            "status_routes_under_100_streams_s", "rss_mb", "machine",
                                            "measured_at") if k in serving},
        "serving_attacks": serving["attacks"],
        "data": {k: data[k] for k in ("flat", "worst_rate_ratio", "slowest_s_per_mb", "machine") if k in data},
        "summary": {"serving_attacks_passed": f"{serving['passed']}/{serving['total']}",
                    "data_time_per_mb_flat_10kb_to_1mb": data.get("flat"),
                    "details": "reliability_serving.json, reliability_data.json"},
    }
    (RESULTS / "reliability.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"], indent=1))


if __name__ == "__main__":
    main()
