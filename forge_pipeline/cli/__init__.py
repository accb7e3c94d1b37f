"""`forge`: your vault -> a private companion model, on this machine.

Each command group lives in its own module and registers itself through ``add_commands(sub)``; each command
imports only what it needs, so the data commands start without torch."""
from __future__ import annotations

import argparse
import sys

# Command-group modules, in the order their commands appear in `forge --help`.
COMMAND_MODULES = ("data", "train", "export", "models", "eval", "serving", "status", "up")

DESCRIPTION = "Turn a Markdown vault into a private companion model, trained and served on this machine."
EPILOG = """usual order:
  forge extract -> forge review -> forge curate -> forge train -> forge export -> forge serve
  (or all of it, nightly: forge up, then `dg launch --job forge_job` or the nightly schedule)

examples:
  forge up                          serving + Dagster daemon + web UI, schedule and deploy sensor on
  forge extract --vault ~/Notes     read a vault (never written to)
  forge train --max-steps 96        train longer than the CPU default (48 steps)
  forge status                      what is live, how good it is, what to do next
  forge rollback                    back to the previous model
settings: FORGE_* environment variables (see README, "Settings"); --home works before or after the command."""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from forge_pipeline import __version__
    from forge_pipeline.cli.common import HelpFormatter, add_global_options

    parser = argparse.ArgumentParser(prog="forge", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"forge {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"forge_pipeline.cli.{name}").add_commands(sub)
    for p in sub.choices.values():  # global options after the command too; every default shown
        p.formatter_class = HelpFormatter if p.formatter_class is argparse.HelpFormatter else p.formatter_class
        add_global_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from forge_pipeline.cli.common import quiet_libraries

    args = build_parser().parse_args(argv)
    try:
        quiet_libraries(getattr(args, "verbose", False), args.command)
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `forge status | head`: the reader left; nothing to report, no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush is quiet too
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"forge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
