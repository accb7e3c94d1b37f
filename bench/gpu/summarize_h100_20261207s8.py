"""bench/results/gpu_nightly_h100_20261207s8.json from the raw device output of session 8 (2026-12-07, later
that day) in bench/results/raw/h100_20261207s8/: device_nightly.sh setup, night0, `NIGHT=1 ... together` (a
timed nightly, then bare unsloth vs forge in the same command), `NIGHTS=3 VALIDATE=1 ... nights`; four calls on
one warm H100, code at 4a1ed5f (the nightly's evaluation now includes the prompt-gain pass, 4d9249b).

    python -m bench.gpu.summarize_h100_20261207s8
"""
from __future__ import annotations

import json

from bench.gpu.summarize_h100_20261207 import RESULTS, nightly_summary, side_by_side, write
from bench.gpu.summarize_h100_20261207 import rows as raw_rows


def rows(name: str) -> list[dict]:
    return raw_rows(f"h100_20261207s8/{name}")


def main() -> None:
    nights = [r for f in ("together1/nightly_runs.jsonl", "nights3/nightly_runs.jsonl") for r in rows(f)
              if r.get("stage") == "nightly"]
    for n in nights:
        n["swap_timings"] = n.pop("swap_response", {}).get("timings")
    validation = next(r for r in rows("nights3/nightly_runs.jsonl") if r.get("stage") == "export_validation")
    peer = rows("together1/gpu_training_runs.jsonl")
    before = json.loads((RESULTS / "gpu_nightly_h100_20261207.json").read_text())
    bt = next(r for r in rows("night0/nightly_runs.jsonl") if r.get("mode") == "backtranslate-gpu")
    out = {
        "what": "Adapter-native 8B nightly on one H100 80GB (nvidia-h100-x1), session 8 of 2026-12-07, code at 4a1ed5f: "
                "the same cycle as gpu_nightly_h100_20261207.json (curated JSONL, 500 reflection-length examples x 3 "
                "epochs, seed hyperparameters, packed -> adapter GGUF -> evaluation -> swap into a running server on "
                "the q4_k_m base), now with the evaluation's prompt-gain pass (the candidate's 50 eval conversations "
                "scored a second time under the neutral prompt). Night 1's nightly and the bare-unsloth peer ran in "
                "ONE command (device_nightly.sh together); night 3's nightly in the next call, followed by the "
                "Dagster job's export check (a child process loads the adapter on the base), timed on its own. "
                "Random-weight Llama-3.1-8B-architecture model: the gate refuses (8 of 8 probe answers loop), the "
                "bench swaps the adapter in regardless, to time the swap.",
        "setup": rows("setup/nightly_runs.jsonl"),
        "night0_builds_base_gguf": [r for r in rows("night0/nightly_runs.jsonl") if r.get("stage")],
        "nightlies": nights,
        "summary": {
            **nightly_summary(nights),
            "job_export_check_s": validation["validate_s"], "job_export_check": validation,
            "earlier_today_without_prompt_gain": {"nightly_total_s": before["summary"]["nightly_total_s"],
                                                  "stages_s": before["summary"]["stages_s"]},
        },
        "training_side_by_side": {
            "how": "in the same command as night 1's nightly, right after it: bare unsloth (bare_unsloth_bench.py) and "
                   "forge's unsloth path (train_shape.py, steady tokens/s over steps 4-16) alternating, two rounds "
                   "(run_training_bench repeat2)",
            **side_by_side(peer), "earlier_today_ratio_pairwise": before["training_side_by_side"]["ratio_pairwise"],
            "runs": peer,
        },
        "backtranslation_gpu": {
            "what": "bench.gpu.backtranslate_gpu after night 0: the sample vault extracted and curated with "
                    "back-translation at its default, generating with the random 8B's q4_k_m base on the GPU, cold "
                    "then cached. Random weights write no usable question: every example fell back to its template "
                    "with the reason (empty, too long). This shows the path is on by default on a CUDA machine and runs "
                    "there; its cost per example is a floor (most answers stopped at their first newline, so real "
                    "questions, being longer, cost more), and nothing about the questions' quality.",
            **bt, "cold_s_per_example": round(bt["cold"]["user_turns"]["generation_s"] / bt["cold"]["user_turns"]["examples"], 3)},
    }
    write(out, "gpu_nightly_h100_20261207s8.json")


if __name__ == "__main__":
    main()
