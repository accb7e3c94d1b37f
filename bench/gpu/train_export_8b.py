"""The training and adapter-export half of the 8B nightly, for a device call too short for the CUDA build of
llama-cpp-python that evaluation and serving need: imports, training (the project's default layout) and the
adapter GGUF export on an f16 base GGUF (converting needs no llama.cpp; quantizing would). Prints one JSON line.

    BENCH_QUANT=f16 python bench/gpu/train_export_8b.py MODEL_DIR WORK SEED

It imports `bench.gpu.nightly_8b` and `forge_pipeline` from PYTHONPATH, so the same file times another tree's
code (the code before a change) when that tree comes first on the path.
"""
import json
import os
import sys
import time
from pathlib import Path

from bench.gpu import nightly_8b  # stdlib only at import: its _import_unsloth is what is timed


def main() -> None:
    model_dir, work, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    t0 = time.time()
    nightly_8b._import_unsloth()  # unsloth before transformers, as in production (BENCH_BACKEND=transformers: none)
    stages = {"imports_s": round(time.time() - t0, 2)}
    report, exp, _ = nightly_8b._night(model_dir, work, data_seed=seed, max_steps=-1, stages=stages)
    m = report.metrics
    print(json.dumps({"stage": "train_export", "code": nightly_8b.__file__, "data_seed": seed, **stages,
                      "total_s": round(time.time() - t0, 2), "adapter_size_mb": exp.size_mb if exp else None,
                      **{k: m.get(k) for k in ("global_step", "train_loss", "eval_loss", "base_eval_loss", "tokens_seen",
                                               "steady_tokens_per_s", "batch_layout", "batch_size_used",
                                               "gradient_accumulation_used", "peak_memory_gib", "epochs",
                                               "uncheckpointed_layers")},
                      "checkpoint_skip_layers": os.environ.get("BENCH_SKIP", "default"),
                      "eval_points": [h for h in report_history(report)]}), flush=True)


def report_history(report) -> list:
    """The eval losses logged during training (the loss curve's points), from the adapter's manifest."""
    try:
        from forge_pipeline.training.manifest import AdapterManifest

        manifest = AdapterManifest.read_if_exists(Path(report.final_dir))
        return [(h.get("step"), round(h["eval_loss"], 4)) for h in (manifest.log_history or []) if "eval_loss" in h]
    except Exception as e:  # noqa: BLE001 - the before tree's manifest may differ
        return [f"unavailable: {type(e).__name__}"]


if __name__ == "__main__":
    main()
