"""`forge`: the command line (extract, curate, review, train, export, status, reload, serve).

Each command group lives in its own module and registers itself through ``add_commands(sub)``; each command
imports only what it needs, so the data commands start without torch."""
from __future__ import annotations

import argparse
import sys

# Command-group modules, in the order their commands appear in `forge --help`.
COMMAND_MODULES = ("data", "train", "export", "models", "eval", "serving")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="forge", description=__doc__)
    parser.add_argument("--home", help="data home (default: FORGE_HOME or ~/.companion)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"forge_pipeline.cli.{name}").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"forge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
