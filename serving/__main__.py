"""python -m serving [--host H] [--port P] [--model PATH]   (also: forge serve)"""
from __future__ import annotations

import argparse
import ipaddress
import sys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    from serving.settings import ServingSettings

    ap = argparse.ArgumentParser(prog="forge serve", description=__doc__)
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model", help="GGUF served when no deployment is recorded under FORGE_HOME")
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in (("serve_host", args.host), ("serve_port", args.port), ("model_path", args.model)) if v}
    settings = ServingSettings(**overrides)
    if not is_loopback(settings.serve_host) and not settings.admin_token:
        print(f"refusing to listen on {settings.serve_host} without an admin token: set FORGE_ADMIN_TOKEN "
              "(the admin endpoints can load files and swap the model)", file=sys.stderr)
        return 2
    import uvicorn

    from serving.app import create_app

    uvicorn.run(create_app(settings), host=settings.serve_host, port=settings.serve_port, log_level="info",
                timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
