"""GPU evidence for export: train a few steps on the random Llama-3.1-8B-architecture model with the
unsloth backend, then merge (16-bit) + GGUF convert + q4_k_m quantize + validate through the project's own
export_model, recording the times. Prints one JSON line.
    python -m bench.gpu.export_8b MODEL_DIR WORK_DIR
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import unsloth  # noqa: F401

    from bench.gpu.train_shape import make_data
    from forge_pipeline.export.export import export_model
    from forge_pipeline.training.config import TrainingConfig
    from forge_pipeline.training.trainer import run_training

    model_dir, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    make_data(work / "train.jsonl", model_dir, 16, (100, 200))
    make_data(work / "eval.jsonl", model_dir, 4, (60, 120), seed=1)
    t = time.time()
    cfg = TrainingConfig(base_model=model_dir, backend="unsloth", max_steps=3, batch_size=4, gradient_accumulation_steps=1,
                         max_seq_length=256, min_examples=1, save_steps=10_000, logging_steps=1)
    report = run_training(work / "train.jsonl", work / "training", cfg, eval_path=work / "eval.jsonl", home=work,
                          log=lambda m: print(m, file=sys.stderr))
    train_s = time.time() - t
    import torch

    torch.cuda.empty_cache()
    t = time.time()
    exp = export_model(report.final_dir, work / "models", quant="q4_k_m", eval_path=work / "eval.jsonl",
                       log=lambda m: print(m, file=sys.stderr))
    v = {k: v for k, v in exp.validation.items() if k != "chat_template"}
    print(json.dumps({"mode": "forge-export-8b", "train_s": round(train_s, 1), "export_total_s": round(time.time() - t, 1),
                      "timings": exp.timings, "gguf_size_mb": exp.size_mb, "quantization": exp.quantization,
                      "sha256": exp.sha256, "validation": v, "backend": report.backend}), flush=True)


if __name__ == "__main__":
    main()
