"""What every `forge` command shares: settings from the global flags, help formatting, quiet libraries, printing."""
from __future__ import annotations

import argparse
import json
import os


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default unless its help already says what the default is (device- or
    setting-dependent defaults are written out in the help text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not text or not action.option_strings or "default" in text.lower() or action.default is argparse.SUPPRESS
                or action.nargs == 0):  # no option strings: a positional or an entry of the command list
            return text
        return f"{text} (default: not set)" if action.default is None else f"{text} (default: %(default)s)"


def add_global_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """--home and --verbose, accepted before or after the command (after wins)."""
    default = None if top else argparse.SUPPRESS  # a subcommand leaves the top-level value alone unless given
    known = {o for a in parser._actions for o in a.option_strings}
    if "--home" not in known:
        parser.add_argument("--home", default=default, help="data home (default: FORGE_HOME, else ~/.companion)")
    if "--verbose" not in known:
        parser.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                            help="show library warnings, progress bars and debug logs (default: quiet)")


# Commands that draw no progress bar of their own: every tqdm bar is off there unless verbose.
NO_OWN_BARS = {"train"}


def quiet_libraries(verbose: bool, command: str = "") -> None:
    """--verbose (or FORGE_VERBOSE) keeps library chatter; otherwise it is off here and in every process this
    command starts (the Dagster children of `forge up`, their trainers), which read FORGE_VERBOSE."""
    from forge_pipeline.config import load_config
    from forge_pipeline.training.measurement import quiet_libraries as quiet

    if verbose:
        os.environ["FORGE_VERBOSE"] = "1"
    quiet(verbose or load_config().verbose, own_bars=command not in NO_OWN_BARS)


def config_from_args(args):
    """The one place that turns CLI flags into ForgeSettings (--home, --vault)."""
    from forge_pipeline.config import load_config

    return load_config(home=getattr(args, "home", None), vault=getattr(args, "vault", None))


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
