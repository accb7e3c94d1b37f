"""`forge train`: curated set -> LoRA adapter. torch is imported only when it runs."""
from __future__ import annotations

from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def cmd_train(args) -> int:
    from forge_pipeline.training.base_model import cuda_available
    from forge_pipeline.training.config import default_training_config
    from forge_pipeline.training.trainer import run_training

    config = _config(args)
    cfg = default_training_config(cuda_available())
    overrides = {"num_epochs": args.epochs, "learning_rate": args.lr, "max_steps": args.max_steps,
                 "base_model": args.base_model, "backend": args.backend, "batch_size": args.batch_size}
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    data = Path(args.data) if args.data else config.curated_path
    eval_path = Path(args.eval) if args.eval else (config.eval_path if not args.data else None)
    out = Path(args.output) if args.output else config.training_dir
    report = run_training(data, out, cfg, eval_path=eval_path, home=config.home_dir)
    m = report.metrics
    print(f"{report.status}: {report.final_dir} (backend {report.backend}, train loss {m.get('train_loss')}, "
          f"eval loss {m.get('eval_loss')}, base eval loss {m.get('base_eval_loss')})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="curated set -> LoRA adapter (FORGE_HOME/training/final)")
    p.add_argument("--data", help="training JSONL (default: FORGE_HOME/training_data/curated.jsonl)")
    p.add_argument("--eval", help="eval JSONL (default: the curated eval split)")
    p.add_argument("--output", help="training folder (default: FORGE_HOME/training)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--base-model", help="hub id, local HF directory or .gguf file")
    p.add_argument("--backend", choices=["auto", "unsloth", "transformers"])
    p.set_defaults(func=cmd_train)
