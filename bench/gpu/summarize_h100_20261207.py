"""bench/results/gpu_nightly_h100_20261207.json from the raw device output of 2026-12-07 in bench/results/raw/
(h100_20261207_*: device_nightly.sh setup, night0, `NIGHTS="1 3" VALIDATE=0 ... nights`, then peer2, four calls
on one warm H100, code at 2da3975). The nightly's evaluation there predates the prompt-gain pass (4d9249b).

    python -m bench.gpu.summarize_h100_20261207
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import median

RESULTS = Path(__file__).resolve().parents[1] / "results"
STAGES = ("imports_s", "load_s", "train_s", "adapter_export_s", "evaluation_s", "swap_s")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (RESULTS / "raw" / name).read_text().splitlines() if line.startswith('{"')]


def side_by_side(peer: list[dict], skip: str = "0") -> dict:
    """Bare unsloth against forge's unsloth path, per sequence length: tokens/s and pairwise ratios. ``skip``:
    forge's checkpoint_skip_layers ("0", every layer recomputed as bare unsloth does, is like for like; rows
    from before the setting existed had no other)."""
    bare = {s: [r["tokens_per_s"] for r in peer if r["mode"] == "unsloth" and r.get("seq") == s] for s in (512, 2048)}
    forge = {s: [r["steady_tokens_per_s"] for r in peer if r["mode"] == "forge-unsloth" and r["seq"] == s
                 and not r.get("packing") and r.get("checkpoint_skip_layers", "0") == skip] for s in (512, 2048)}
    return {"bare_tokens_per_s": bare, "forge_steady_tokens_per_s": forge,
            "ratio_pairwise": {s: [round(f / b, 3) for f, b in zip(forge[s], bare[s])] for s in (512, 2048)},
            "median_ratio": {s: round(median(forge[s]) / median(bare[s]), 3) for s in (512, 2048)}}


def nightly_summary(nights: list[dict]) -> dict:
    """The timed nightlies' figures side by side (sessions 8 and 9, whose nightly rows carry the prompt-gain
    pass's timings)."""
    return {
        "nightly_total_s": [n["total_s"] for n in nights], "target_s": 120,
        "stages_s": {k: [n[k] for n in nights] for k in STAGES},
        "evaluation_target_s": 30,
        "evaluation_prompt_gain_s": [n["evaluation_timings"]["candidate_prompt_gain_s"] for n in nights],
        "evaluation_scoring_s": [n["evaluation_timings"]["candidate_scoring_s"] for n in nights],
        "global_step": [n["global_step"] for n in nights],
        "steady_tokens_per_s": [n["steady_tokens_per_s"] for n in nights], "packed_target_tokens_per_s": 12000,
        "adapter_size_mb": nights[0]["adapter_size_mb"],
    }


def write(out: dict, name: str) -> None:
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"], indent=1))
    print(json.dumps({k: v for k, v in out["training_side_by_side"].items() if k != "runs"}))


def main() -> None:
    nights = [r for r in rows("h100_20261207_nights.jsonl") if r.get("stage") == "nightly"]
    for n in nights:
        n["swap_timings"] = n.pop("swap_response", {}).get("timings")
    peer = rows("h100_20261207_peer2.jsonl")
    previous = json.loads((RESULTS / "gpu_nightly_h100.json").read_text())["summary"]
    out = {
        "what": "Adapter-native 8B nightly on one H100 80GB (nvidia-h100-x1), 2026-12-07, code at 2da3975: curated "
                "JSONL (500 reflection-length examples, 100-400 tokens) -> LoRA, seed hyperparameters (r16/alpha32, 7 "
                "projections, lr 2e-4, 3 epochs, batch 4x4), default layout (packed bfd) -> adapter GGUF -> evaluation "
                "(50 eval conversations + 8 probes; base + adapter on one CUDA llama.cpp load) -> swap into a running "
                "server holding the q4_k_m base. Night 0 (the same cycle, 2 steps) built the base GGUF once and "
                "cached the base's probe answers; then two timed nightlies on two later nights' data (data seeds 1 "
                "and 3), each a fresh process (its imports count). Random-weight Llama-3.1-8B-architecture model (no "
                "weights can be fetched there): the gate refuses both (8 of 8 probe answers loop), which is about "
                "random weights; the bench swaps the adapter in regardless, to time the swap. The evaluation here "
                "has no prompt-gain pass yet (added after, 4d9249b: a second scoring of the candidate's 50 "
                "conversations, whose first scoring took 7.1-7.3 s here). Then bare unsloth and forge's unsloth path "
                "alternating twice at 4x512 and 4x2048 (peer2), in the next call on the same machine.",
        "setup": rows("h100_20261207_setup.jsonl"),
        "night0_builds_base_gguf": rows("h100_20261207_night0.jsonl"),
        "nightlies": nights,
        "summary": {
            "nightly_total_s": [n["total_s"] for n in nights], "target_s": 120,
            "stages_s": {k: [n[k] for n in nights] for k in STAGES},
            "evaluation_target_s": 30,
            "global_step": [n["global_step"] for n in nights],
            "steady_tokens_per_s": [n["steady_tokens_per_s"] for n in nights], "packed_target_tokens_per_s": 12000,
            "adapter_size_mb": nights[0]["adapter_size_mb"],
            "previous_round": {"nightly_total_s": previous["nightly_total_s"], "stages_s": previous["stages_s"]},
        },
        "training_side_by_side": {
            "how": "device_nightly.sh peer2: bare unsloth (bare_unsloth_bench.py) and forge's unsloth path "
                   "(train_shape.py, steady tokens/s over steps 4-16) alternating, two rounds, one call",
            **side_by_side(peer), "runs": peer,
        },
        "backtranslation_gpu": "not measured: bench.gpu.backtranslate_gpu failed at extraction, the device bundle "
                               "has no presidio-analyzer package metadata (raw/h100_20261207_backtranslate.log)",
    }
    write(out, "gpu_nightly_h100_20261207.json")


if __name__ == "__main__":
    main()
