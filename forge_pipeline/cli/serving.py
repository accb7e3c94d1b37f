"""`forge reload`, `forge serve`: the serving process and what it runs."""
from __future__ import annotations

import json
import sys

from forge_pipeline.cli.common import config_from_args as _config


def cmd_reload(args) -> int:
    from forge_pipeline.reload import reload_model

    result = reload_model(_config(args), args.model_path, backup=not args.no_backup)
    print(json.dumps(result, indent=2))
    return 0


def cmd_serve(args) -> int:
    from forge_pipeline.cli.models_on_disk import choose_model, serve_args
    from serving.__main__ import main as serve_main

    argv = [a for pair in (("--host", args.host), ("--port", args.port)) if pair[1] is not None
            for a in (pair[0], str(pair[1]))]
    if args.model is not None:
        return serve_main(argv + ["--model", args.model])
    choice = choose_model(_config(args))
    print(f"forge serve: {choice.why}", file=sys.stderr, flush=True)
    return serve_main(argv + serve_args(choice))


def add_commands(sub) -> None:
    p = sub.add_parser("reload", help="tell the running server to hot-swap to a GGUF")
    p.add_argument("model_path", help="a full GGUF, or a LoRA adapter GGUF made for the loaded base")
    p.add_argument("--no-backup", action="store_true", help="do not keep the previous model for rollback")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("serve", help="OpenAI-compatible chat server with hot reload (127.0.0.1:7373)")
    p.add_argument("--host", help="address to bind (default: FORGE_SERVING_URL's host, 127.0.0.1); beyond "
                                  "loopback needs FORGE_ADMIN_TOKEN")
    p.add_argument("--port", type=int, help="port (default: FORGE_SERVING_URL's port, 7373)")
    p.add_argument("--model", help="GGUF to serve (default: the live model, else the newest validated export; "
                                   "it says which)")
    p.set_defaults(func=cmd_serve)
