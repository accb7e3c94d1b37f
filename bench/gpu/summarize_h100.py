"""bench/results/gpu_nightly_h100.json from the raw device output kept in bench/results/raw/ (2026-11-25):
h100_nightly_setup.jsonl and h100_nightly_runs.jsonl (device_nightly.sh setup, then nights, on one warm
machine) and h100_training_side_by_side.jsonl (bare unsloth and forge's unsloth path in one command:
bare, forge 4x512, forge 4x2048, forge packed, bare, forge 4x512).

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
    runs, train = rows("h100_nightly_runs.jsonl"), rows("h100_training_side_by_side.jsonl")
    night = dict(next(r for r in runs if r.get("stage") == "nightly"))
    night.pop("swap_response", None)
    bare = {s: [r["tokens_per_s"] for r in train if r["mode"] == "unsloth" and r.get("seq") == s] for s in (512, 2048)}
    forge = {s: [r["steady_tokens_per_s"] for r in train if r["mode"] == "forge-unsloth" and r["seq"] == s
                 and not r["packing"]] for s in (512, 2048)}
    packed = [r["steady_tokens_per_s"] for r in train if r["mode"] == "forge-unsloth" and r["packing"]]
    out = {
        "what": "Adapter-native 8B nightly on one H100 80GB (nvidia-h100-x1): curated JSONL (500 reflection-length "
                "examples, 100-400 tokens) -> LoRA with the seed hyperparameters (r16/alpha32, 7 projections, lr 2e-4, "
                "3 epochs, batch 4x4) in the project's default layout -> adapter GGUF (export_model) -> evaluation "
                "(forge_pipeline.evaluation: 50 eval examples + default probes; base and base+adapter through CUDA "
                "llama.cpp; HF bf16 reference for the KLD) -> swap into a running server holding the q4_k_m base. "
                "Random-weight Llama-3.1-8B-architecture model (no weights can be fetched there): the gate's refusal "
                "is about random weights, not quality. One nightly run: the device time allowed one.",
        "setup_one_time": rows("h100_nightly_setup.jsonl"),
        "night0_builds_base_gguf": next(r for r in runs if r.get("stage") == "night0_builds_base_gguf"),
        "serving_base_ready": next(r for r in runs if r.get("stage") == "serving_base_ready"),
        "nightly": night,
        "summary": {
            "nightly_total_s": night["total_s"], "target_s": 120,
            "without_evaluation_s": round(night["total_s"] - night["evaluation_s"], 1),
            "evaluation_s": night["evaluation_s"], "evaluation_target_s": 30, "swap_s": night["swap_s"],
            "adapter_size_mb": night["adapter_size_mb"], "adapter_target_mb": 100,
            "before": {"full_gguf_cycle_s": 592, "full_gguf_size_mb": 4688},
        },
        "training_side_by_side": {
            "runs": train,
            "bare_tokens_per_s": bare, "forge_steady_tokens_per_s": forge,
            "ratio_4x512_pairwise": [round(f / b, 2) for f, b in zip(forge[512], bare[512])],
            "ratio_4x512_medians": round(median(forge[512]) / median(bare[512]), 2),
            "ratio_4x2048": round(median(forge[2048]) / median(bare[2048]), 3),
            "packed_tokens_per_s": packed, "packed_target": 12000,
        },
    }
    (RESULTS / "gpu_nightly_h100.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out["summary"][k] for k in out["summary"]}, indent=1))
    print(json.dumps({k: v for k, v in out["training_side_by_side"].items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
