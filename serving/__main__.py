"""python -m serving [--host H] [--port P] [--model PATH [--base BASE]]   (also: forge serve)

Binds to FORGE_SERVING_URL's host and port (default http://127.0.0.1:7373) unless --host/--port say otherwise."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from serving.settings import ServingSettings

    ap = argparse.ArgumentParser(prog="forge serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model", help="GGUF served when no deployment is recorded under FORGE_HOME")
    ap.add_argument("--base", help="the base GGUF --model goes on, when --model is a LoRA adapter GGUF")
    args = ap.parse_args(argv)
    try:
        given = {"model_path": args.model, "base_path": args.base}
        settings = ServingSettings(**{k: v for k, v in given.items() if v})
        settings = settings.with_bind(args.host, args.port)
        host, port = settings.bind_host, settings.bind_port
    except ValueError as e:
        print(f"forge serve: {e}", file=sys.stderr)
        return 2
    if settings.beyond_loopback and not settings.admin_token:
        print(f"refusing to listen on {host} without an admin token: set FORGE_ADMIN_TOKEN "
              "(the admin endpoints can load files and swap the model; beyond loopback it also guards chat)",
              file=sys.stderr)
        return 2
    import uvicorn

    from serving.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
