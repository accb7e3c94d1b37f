"""`forge` commands that touch models: train, export, status, reload, serve. Heavy imports stay inside."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _config(args):
    from forge_pipeline.cli import _config as config_from_args  # one place turns CLI flags into settings

    return config_from_args(args)


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


def cmd_export(args) -> int:
    from tqdm import tqdm

    from forge_pipeline.export.export import EXPORT_STAGES, export_model
    from forge_pipeline.export.gguf import default_quantization
    from forge_pipeline.export.validate import degenerate_problems, load_problems, parity_problems
    from forge_pipeline.training.base_model import cuda_available

    config = _config(args)
    adapter = Path(args.adapter) if args.adapter else config.training_dir / "final"
    manifest = adapter / "manifest.json"
    base = json.loads(manifest.read_text())["base_model"]["name"] if manifest.exists() else None
    quant = args.quant or default_quantization(base, cuda_available())
    with tqdm(total=len(EXPORT_STAGES), desc="export", unit="stage", file=sys.stderr) as bar:
        def on_stage(name: str) -> None:
            bar.update(EXPORT_STAGES.index(name) - bar.n)
            bar.set_postfix_str(name)

        report = export_model(adapter, config.models_dir, quant=quant, name=args.name, eval_path=config.eval_path,
                              on_stage=on_stage)
        bar.update(bar.total - bar.n)
    print(f"{report.status}: {report.gguf_path} ({report.size_mb} MB, {report.quantization}, sha256 {report.sha256[:16]}...)")
    problems = load_problems(report.validation) + degenerate_problems(report.validation) + parity_problems(report.validation)
    for p in problems:
        print(f"validation: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_status(args) -> int:
    from forge_pipeline.export.export import last_export
    from forge_pipeline.reload import get_model_status

    config = _config(args)
    status = {"forge_home": str(config.home_dir), "vault": str(config.vault_dir)}
    for name, path in (("extracted", config.extracted_path), ("curated", config.curated_path), ("eval", config.eval_path)):
        status[f"{name}_examples"] = sum(1 for _ in path.open()) if path.exists() else None
    manifest = config.training_dir / "final" / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        status["adapter"] = {"path": str(manifest.parent), "created": m["created"], "backend": m["backend"],
                             "base_model": m["base_model"]["name"], "eval_loss": m["metrics"].get("eval_loss"),
                             "base_eval_loss": m["metrics"].get("base_eval_loss")}
    export = last_export(config.models_dir)
    if export:
        status["model"] = {"path": str(Path(export["dir"]) / export["file"]), "version": export["version"],
                           "sha256": export["sha256"], "size_mb": export["size_mb"], "quantization": export["quantization"]}
    status["serving"] = get_model_status(config)
    print(json.dumps(status, indent=2, default=str))
    return 0


def cmd_reload(args) -> int:
    from forge_pipeline.reload import reload_model

    result = reload_model(_config(args), args.model_path, backup=not args.no_backup)
    print(json.dumps(result, indent=2))
    return 0


def cmd_serve(args) -> int:
    from serving.__main__ import main as serve_main

    argv = [a for pair in (("--host", args.host), ("--port", args.port), ("--model", args.model)) if pair[1] is not None
            for a in (pair[0], str(pair[1]))]
    return serve_main(argv)


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

    p = sub.add_parser("export", help="adapter -> merged 16-bit -> GGUF (FORGE_HOME/models/<version>/)")
    p.add_argument("--adapter", help="adapter folder (default: FORGE_HOME/training/final)")
    p.add_argument("--quant", choices=["q4_k_m", "q5_k_m", "q8_0", "f16"])
    p.add_argument("--name", default="companion")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", help="data, adapter, model and serving status")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("reload", help="tell the running server to hot-swap to a GGUF")
    p.add_argument("model_path")
    p.add_argument("--no-backup", action="store_true", help="do not keep the previous model for rollback")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("serve", help="OpenAI-compatible chat server with hot reload (127.0.0.1:7373)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model", help="GGUF to serve (default: the last deployed model, else FORGE_MODEL_PATH)")
    p.set_defaults(func=cmd_serve)
