"""bench/results/gpu_nightly_h100.json from the raw device output kept in bench/results/raw/ (2026-11-25):
h100_session3_setup_night0.jsonl and h100_session3_nightly.jsonl (device_nightly.sh setup, then nights, on one
warm machine; the log is h100_session3_nightly.log), h100_side_by_side_repeat.jsonl (bare unsloth and forge's
unsloth path alternating, device_nightly.sh peer, plus forge's third round and the packed run), and the previous
session's nightly (h100_nightly_runs.jsonl) for comparison.

    python -m bench.gpu.summarize_h100
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import median

RESULTS = Path(__file__).resolve().parents[1] / "results"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (RESULTS / "raw" / name).read_text().splitlines() if line.startswith('{"')]


def main() -> None:
    setup, runs = rows("h100_session3_setup_night0.jsonl"), rows("h100_session3_nightly.jsonl")
    night = dict(next(r for r in runs if r.get("stage") == "nightly"))
    night.pop("swap_response", None)
    before = dict(next(r for r in rows("h100_nightly_runs.jsonl") if r.get("stage") == "nightly"))
    train = rows("h100_side_by_side_repeat.jsonl")
    bare = {s: [r["tokens_per_s"] for r in train if r["mode"] == "unsloth" and r.get("seq") == s] for s in (512, 2048)}
    forge = {s: [r["steady_tokens_per_s"] for r in train if r["mode"] == "forge-unsloth" and r["seq"] == s
                 and not r["packing"]] for s in (512, 2048)}
    packed = [r["steady_tokens_per_s"] for r in train if r["mode"] == "forge-unsloth" and r["packing"]]
    ev = night["evaluation_timings"]
    out = {
        "what": "Adapter-native 8B nightly on one H100 80GB (nvidia-h100-x1), 2026-11-25 (session 3): curated JSONL "
                "(500 reflection-length examples, 100-400 tokens) -> LoRA with the seed hyperparameters (r16/alpha32, "
                "7 projections, lr 2e-4, 3 epochs, batch 4x4) in the project's default layout -> adapter GGUF "
                "(export_model) -> evaluation (forge_pipeline.evaluation: 50 eval conversations, 5 of them new since "
                "night 0, + the default probes; base and base+adapter on one CUDA llama.cpp load; fidelity KLD against "
                "the trainer's top-256 reference logits) -> swap into a running server holding the q4_k_m base. "
                "Night 0 ran the same cycle the night before (it built the base GGUF once and cached the base's probe "
                "answers). Random-weight Llama-3.1-8B-architecture model (no weights can be fetched there): the gate's "
                "refusal (8 of 8 probe answers loop) is about random weights, not quality. One timed nightly: the "
                "device time allowed one.",
        "setup_one_time": [r for r in setup if r.get("stage") != "night0_builds_base_gguf"],
        "night0_builds_base_gguf": next(r for r in setup if r.get("stage") == "night0_builds_base_gguf"),
        "serving_base_ready": next(r for r in runs if r.get("stage") == "serving_base_ready"),
        "nightly": night,
        "summary": {
            "nightly_total_s": night["total_s"], "target_s": 120,
            "stages_s": {k: night[k] for k in ("imports_s", "load_s", "train_s", "adapter_export_s", "evaluation_s",
                                               "swap_s")},
            "training_other_s": round(night["training_total_s"] - night["load_s"] - night["train_s"], 1),
            "evaluation_s": night["evaluation_s"], "evaluation_target_s": 30, "evaluation_stages_s": ev,
            "swap_s": night["swap_s"], "adapter_size_mb": night["adapter_size_mb"], "adapter_target_mb": 100,
            "previous_session": {"nightly_total_s": before["total_s"], "evaluation_s": before["evaluation_s"],
                                 "evaluation_stages_s": before["evaluation_timings"]},
            "before_adapters": {"full_gguf_cycle_s": 592, "full_gguf_size_mb": 4688},
        },
        "training_side_by_side": {
            "how": "one command: bare unsloth (bare_unsloth_bench.py: 3 warm-up + 8 timed steps of random tokens) and "
                   "forge's unsloth path (train_shape.py: 16 steps, steady tokens/s over steps 4-16) alternating, "
                   "rounds 1-2 in one call, forge's third round and the packed run in the next call on the same "
                   "warm machine",
            "runs": train,
            "bare_tokens_per_s": bare, "forge_steady_tokens_per_s": forge,
            "ratio_4x512_pairwise": [round(f / b, 2) for f, b in zip(forge[512], bare[512])],
            "ratio_4x512_medians": round(median(forge[512]) / median(bare[512]), 2),
            "ratio_4x2048_medians": round(median(forge[2048]) / median(bare[2048]), 3),
            "packed_tokens_per_s": packed, "packed_target": 12000,
        },
    }
    (RESULTS / "gpu_nightly_h100.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out["summary"][k] for k in out["summary"]}, indent=1))
    print(json.dumps({k: v for k, v in out["training_side_by_side"].items() if k not in ("runs", "how")}, indent=1))


if __name__ == "__main__":
    main()
