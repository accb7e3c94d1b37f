"""What every `forge` command shares: settings from the global flags, and printing."""
from __future__ import annotations

import json


def config_from_args(args):
    """The one place that turns CLI flags into ForgeSettings (--home, --vault)."""
    from forge_pipeline.config import load_config

    return load_config(home=getattr(args, "home", None), vault=getattr(args, "vault", None))


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
