"""Measured training runs through the project's own entry point (forge_pipeline.training.run_training)
at fixed shapes, on the random-weight model made by bare_unsloth_bench.py. Prints one JSON line a run.

    python -m bench.gpu.train_shape MODEL_DIR --backend unsloth|transformers --seq 512 [--packing]
    python -m bench.gpu.train_shape MODEL_DIR --backend unsloth --seq 512,2048 --skip 0,auto

Several --seq / --skip values run one after another in this process (each run loads the model afresh;
unsloth re-arms its gradient checkpointing at each load), skip-major: the imports (~25 s) are paid once.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

WORDS = "I think I realize looking back on this decision".split()


def make_data(path: Path, tokenizer_dir: str, n: int, lengths: tuple[int, int], seed: int = 0) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    per_word = max(1, len(tok(" ".join(WORDS * 20)).input_ids) / (len(WORDS) * 20))
    rows = []
    for i in range(n):
        target = rng.randint(*lengths)
        text = " ".join(rng.choice(WORDS) for _ in range(int(target / per_word) + 8))
        rows.append({"id": f"{i:016x}", "messages": [{"role": "system", "content": "s"},
                                                     {"role": "user", "content": "q"},
                                                     {"role": "assistant", "content": text}],
                     "source_file": "bench.md", "tags": [], "date": None, "kind": "pattern", "section": None})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--seq", required=True, help="comma-separated row lengths")
    ap.add_argument("--skip", default=None, help="comma-separated checkpoint_skip_layers values "
                    "(default: TrainingConfig's)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--packing", action="store_true", help="reflection-length examples (100-400 tokens), packed")
    ap.add_argument("--packing-strategy", default=None, help="default: TrainingConfig's")
    ap.add_argument("--loss-type", default="nll")
    ap.add_argument("--padding-free", choices=("auto", "on", "off"), default="auto")
    args = ap.parse_args()
    if args.backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as in production)
    skips = [None] if args.skip is None else args.skip.split(",")
    for skip in skips:
        for seq in (int(v) for v in args.seq.split(",")):
            run_shape(args, seq, skip)


def run_shape(args, seq: int, skip) -> None:
    """One run at ``seq`` (``skip``: checkpoint_skip_layers, None for TrainingConfig's); after unsloth's import."""
    from forge_pipeline.training.config import TrainingConfig
    from forge_pipeline.training.trainer import run_training

    work = Path(tempfile.mkdtemp(prefix="forge-gpu-"))
    lengths = (100, 400) if args.packing else (seq + 16, seq + 64)
    # packed: enough examples to fill every step's batch x seq tokens
    n = args.batch * args.steps * (seq // 250 + 1 if args.packing else 1)
    make_data(work / "train.jsonl", args.model_dir, n, lengths)
    cfg = TrainingConfig(base_model=args.model_dir, backend=args.backend, batch_size=args.batch,
                         gradient_accumulation_steps=1, max_seq_length=seq, max_steps=args.steps, num_epochs=1,
                         save_steps=10_000, packing=args.packing, min_examples=1, warmup_ratio=0.0,
                         loss_type=args.loss_type,
                         **({"packing_strategy": args.packing_strategy} if args.packing_strategy else {}),
                         **({} if skip is None else {"checkpoint_skip_layers": skip}),
                         padding_free={"auto": None, "on": True, "off": False}[args.padding_free])
    report = run_training(work / "train.jsonl", work / "training", cfg, home=work, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"mode": f"forge-{args.backend}", "batch": args.batch, "seq": seq, "packing": args.packing,
                      "packing_strategy": cfg.packing_strategy, "loss_type": args.loss_type,
                      "padding_free": args.padding_free, "checkpoint_skip_layers": cfg.checkpoint_skip_layers,
                      "examples": n, "example_tokens": list(lengths), **report.metrics}), flush=True)


if __name__ == "__main__":
    main()
