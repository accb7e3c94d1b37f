"""bench/results/gpu_nightly_h100_20261207s9.json from the raw device output of session 9 (2026-12-07, evening)
in bench/results/raw/h100_20261207s9/: device_nightly.sh setup, night0, `NIGHT=1 ... together` (a timed
nightly, then bare unsloth vs forge in the same command), `BENCH_QUANTS=q8_0 ... quants`; four calls on one warm
H100, code at 0506a26. New this session: the random 8B has Llama 3's turn tokens, template and zero rows (as
a pretrained Llama 3.1 base has; the Instruct GPU default trained them), so the turn-row seeding runs on the
device; the evaluation scores only the answer rows (caf25f3); the adapter's fidelity on a q8_0 base.

    python -m bench.gpu.summarize_h100_20261207s9
"""
from __future__ import annotations

import json

from bench.gpu.summarize_h100_20261207 import RESULTS, nightly_summary, side_by_side, write
from bench.gpu.summarize_h100_20261207 import rows as raw_rows


def rows(name: str) -> list[dict]:
    return raw_rows(f"h100_20261207s9/{name}")


def main() -> None:
    nights = [r for r in rows("together1/nightly_runs.jsonl") if r.get("stage") == "nightly"]
    for n in nights:
        n["swap_timings"] = n.pop("swap_response", {}).get("timings")
    night0 = next(r for r in rows("night0/nightly_runs.jsonl") if r.get("stage") == "night0_builds_base_gguf")
    quants = next(r for r in rows("quants/nightly_runs.jsonl") if r.get("stage") == "fidelity_by_quantization")
    peer = rows("together1/gpu_training_runs.jsonl")
    s8 = json.loads((RESULTS / "gpu_nightly_h100_20261207s8.json").read_text())
    bt = next(r for r in rows("night0/nightly_runs.jsonl") if r.get("mode") == "backtranslate-gpu")
    night = nights[0]
    out = {
        "what": "Adapter-native 8B nightly on one H100 80GB (nvidia-h100-x1), session 9 of 2026-12-07, code at 0506a26: "
                "curated JSONL (500 reflection-length examples x 3 epochs, seed hyperparameters, packed) -> adapter "
                "GGUF -> evaluation (with the prompt-gain pass) -> swap into a running server on the q4_k_m base. "
                "Night 1's nightly and the bare-unsloth peer ran in ONE command (device_nightly.sh together). The "
                "random-weight Llama-3.1-8B-architecture model now has what a pretrained Llama 3.1 base (not the Instruct GPU default) has and a random model "
                "lacks: Llama 3's turn tokens with its template as the base's own, their embedding and output rows at "
                "zero (bench/gpu/export_8b.py zero_turn_rows); training seeded them in memory, the base GGUF got the "
                "same rows (read back below). Machine starts were refused several times before this one, H100 and H200 (about 7 minutes of "
                "device time), so night 3's nightly and the job's export check were not run this session.",
        "setup": rows("setup/nightly_runs.jsonl"),
        "night0_builds_base_gguf": night0,
        "turn_rows_on_the_device": {
            "what": "The seeding a pretrained Llama 3.1 base gets (training/turn_tokens.py in memory under unsloth, export/turn_rows.py in "
                    "the f16 base GGUF before q4_k_m) on the random 8B with Llama 3's turn rows zeroed: what training "
                    "seeded (adapter manifest), and the quantized base GGUF read back with the gguf library (is "
                    "<|eot_id|>'s row byte-equal to EOS's in token_embd and output; are the header rows non-zero). "
                    "Fidelity of the served adapter against the trainer's reference stays of the order of session 8's "
                    "(no mismatch between trained and served rows would show as more); random weights cannot show "
                    "whether answers end.",
            "zeroed": next(r for r in rows("setup/nightly_runs.jsonl") if r.get("stage") == "prepare")["zeroed_turn_rows"],
            "seeded_in_training": night["seeded_turn_tokens"],
            "base_gguf_rows": night0["base_gguf_turn_rows"],
            "night1_fidelity_q4_k_m": night["fidelity"],
            "session8_night1_3_kld_q4_k_m": [0.08758, 0.07868],
        },
        "nightlies": nights,
        "summary": {
            **nightly_summary(nights),
            "session8": {"nightly_total_s": s8["summary"]["nightly_total_s"], "stages_s": s8["summary"]["stages_s"],
                         "evaluation_prompt_gain_s": s8["summary"]["evaluation_prompt_gain_s"],
                         "evaluation_scoring_s": s8["summary"]["evaluation_scoring_s"]},
        },
        "fidelity_by_quantization": {
            "what": "Issue 14's table on the H100: night 1's adapter applied by llama.cpp to the base at each "
                    "quantization, against the trainer's own top-256 reference, on its 50-conversation eval split "
                    "(the q8_0 base built once in this call: convert + seed + quantize, export_s). Random weights: "
                    "quantizing random matrices loses more than quantizing trained ones, so these KLDs are upper "
                    "bounds of the shape, not a real model's figures.",
            "q4_k_m": {"fidelity": night["fidelity"], "base_size_mb": 4688.5},
            **{k: v for k, v in quants.items() if k not in ("stage",)},
        },
        "training_side_by_side": {
            "how": "in the same command as night 1's nightly, right after it: bare unsloth (bare_unsloth_bench.py) and "
                   "forge's unsloth path (train_shape.py, steady tokens/s over steps 4-16) alternating, two rounds "
                   "(run_training_bench repeat2)",
            **side_by_side(peer), "session8_ratio_pairwise": s8["training_side_by_side"]["ratio_pairwise"],
            "runs": peer,
        },
        "backtranslation_gpu": {**bt, "cold_s_per_example": round(
            bt["cold"]["user_turns"]["generation_s"] / bt["cold"]["user_turns"]["examples"], 3)},
    }
    write(out, "gpu_nightly_h100_20261207s9.json")


if __name__ == "__main__":
    main()
