"""`forge status`, `forge reload`, `forge serve`: the live model and the serving process."""
from __future__ import annotations

import json
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def cmd_status(args) -> int:
    from forge_pipeline.export.export import last_export
    from forge_pipeline.reload import get_model_status

    config = _config(args)
    status = {"forge_home": str(config.home_dir), "vault": str(config.vault_dir)}
    for name, path in (("extracted", config.extracted_path), ("curated", config.curated_path), ("eval", config.eval_path)):
        status[f"{name}_examples"] = sum(1 for _ in path.open()) if path.exists() else None
    from forge_pipeline.training.manifest import AdapterManifest

    m = AdapterManifest.read_if_exists(config.adapter_dir)
    if m is not None:
        status["adapter"] = {"path": str(config.adapter_dir), "created": m.created, "backend": m.backend,
                             "base_model": m.base_model.name, "eval_loss": m.eval_loss,
                             "base_eval_loss": m.base_eval_loss}
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
