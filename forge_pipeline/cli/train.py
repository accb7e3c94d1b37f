"""`forge train`: curated set -> LoRA adapter. torch is imported only when it runs.

Every TrainingConfig field is an option, generated from the schema (name, help, allowed values, default),
so a new field is a new flag without an edit here."""
from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Literal

from forge_pipeline.cli.common import config_from_args as _config

# Short names kept from earlier releases, next to the generated --<field-name> ones.
ALIASES = {"num_epochs": ["--epochs"], "learning_rate": ["--lr"]}


def training_overrides_from_args(args) -> dict:
    from forge_pipeline.training.config import field_names

    return {name: getattr(args, name) for name in field_names() if getattr(args, name, None) is not None}


def cmd_train(args) -> int:
    from forge_pipeline.training.base_model import device_name
    from forge_pipeline.training.config import resolve_training_config

    config = _config(args)
    # environment first, flags over it; validated for this machine's device before any data or model is read
    cfg = resolve_training_config({**config.training_overrides(), **training_overrides_from_args(args)},
                                  device_name())
    from forge_pipeline.training.trainer import run_training

    data = Path(args.data) if args.data else config.curated_path
    eval_path = Path(args.eval) if args.eval else (config.eval_path if not args.data else None)
    out = Path(args.output) if args.output else config.training_dir
    # the blocking checks Dagster runs before training (schema, minimum, personal data, disjoint splits)
    from forge_pipeline.curation.validators import curated_set_problems

    problems = curated_set_problems(config, data, eval_path)
    if problems:
        raise ValueError("training not started: the training data fails blocking checks "
                         "(run `forge curate` to see them):\n  " + "\n  ".join(problems[:20]))
    report = run_training(data, out, cfg, eval_path=eval_path, home=config.home_dir)
    print(training_summary(report))
    return 0


def training_summary(report) -> str:
    """The closing lines of `forge train`: what was made, where, the key numbers once and rounded, what next."""
    from forge_pipeline.training.measurement import format_duration

    m = report.metrics
    what = {"cached": "unchanged data, config and base model: the adapter was reused",
            "resumed": "adapter trained (resumed from a checkpoint)"}.get(report.status, "adapter trained")
    lines = [f"{what}: {report.final_dir}"]
    steps = f"{m['global_step']} steps" if m.get("global_step") is not None else None
    took = f"in {format_duration(m['train_s'])}" if m.get("train_s") is not None else None
    lines.append("  " + ", ".join(x for x in (f"backend {report.backend}", steps, took) if x))
    num = {k: m[k] for k in ("eval_loss", "base_eval_loss", "train_loss") if isinstance(m.get(k), (int, float))}
    numbers = []
    if "eval_loss" in num:
        vs_base = (f" (base model {num['base_eval_loss']:.3f}, "
                   f"{(num['eval_loss'] - num['base_eval_loss']) / num['base_eval_loss']:+.1%})"
                   if num.get("base_eval_loss") else "")
        numbers.append(f"eval loss {num['eval_loss']:.3f}{vs_base}")
    if "train_loss" in num:
        numbers.append(f"last train loss {num['train_loss']:.3f}")
    if numbers:
        lines.append("  " + ", ".join(numbers))
    lines.append("next: forge export   (then forge serve, or forge eval to compare with the live model)")
    return "\n".join(lines)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainingConfig field. Values stay strings (lists: one string per item) and are
    validated by resolve_training_config, so the CLI's errors are the schema's."""
    from forge_pipeline.training.config import (
        ENV_PREFIX,
        TrainingConfig,
        allowed_values,
        describe_default,
        unwrap_optional,
    )

    group = parser.add_argument_group("training settings (each also FORGE_TRAIN_<NAME>; flags win)")
    for name, info in TrainingConfig.model_fields.items():
        annotation, _ = unwrap_optional(info.annotation)
        flags = ["--" + name.replace("_", "-"), *ALIASES.get(name, [])]
        help_text = (f"{info.description or ''} Allowed: {allowed_values(name)}. Default: {describe_default(name)}. "
                     f"Env: {ENV_PREFIX}{name.upper()}.").replace("%", "%%")
        kwargs: dict = {"dest": name, "default": None, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is list:
            kwargs.update(nargs="+", metavar="NAME")
        elif typing.get_origin(annotation) is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        else:
            kwargs["metavar"] = "N" if annotation in (int, float) else "VALUE"
        group.add_argument(*flags, **kwargs)


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="curated set -> LoRA adapter (FORGE_HOME/training/final)")
    p.add_argument("--data", help="training JSONL (default: FORGE_HOME/training_data/curated.jsonl)")
    p.add_argument("--eval", help="eval JSONL (default: the curated eval split)")
    p.add_argument("--output", help="training folder (default: FORGE_HOME/training)")
    add_training_options(p)
    p.set_defaults(func=cmd_train)
