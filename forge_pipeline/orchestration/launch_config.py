"""What a forge_job run can be given from the launchpad (or `dg launch --config`, or the schedule), and the
check that refuses bad values before any run exists.

The training fields come from the one training schema (forge_pipeline.training.config): one optional field
per TrainingConfig field, choices as drop-downs the launchpad checks. Ranges (learning_rate > 0, ...) are not
something Dagster's config types express, so forge_job's config mapping validates the overrides when the
run is being created: a bad value fails the launch with the field, the value and the allowed range, and no
run is made. Only the overrides travel on; the trainer resolves them for its own device.

(No `from __future__ import annotations` here: Dagster reads the config mapping's parameter type at runtime.)"""

import enum
from typing import Optional

import dagster as dg
import pydantic
from pydantic import Field

from forge_pipeline.config import load_config
from forge_pipeline.export.gguf import QUANTIZATIONS
from forge_pipeline.training.config import overrides_from_launchpad, training_override_fields, validate_overrides

TrainingRunConfig = pydantic.create_model(
    "TrainingRunConfig", __base__=dg.Config, __doc__="Training overrides; empty fields take the device's default.",
    **training_override_fields())

Quantization = enum.Enum("Quantization", [(q, q) for q in QUANTIZATIONS], type=str)


class ExportRunConfig(dg.Config):
    quantization: Optional[Quantization] = Field(None, description=f"GGUF quantization, one of {', '.join(QUANTIZATIONS)}. "
                                                 "Default: f16 for the embedded Gemma 3 270M (its perplexity "
                                                 "rises 14% at q8_0), q4_k_m otherwise.")
    name: str = Field("companion", description="Name in the exported file's name.")
    merged: bool = Field(False, description="Export one merged full GGUF (for Ollama / LM Studio) instead of a "
                                            "LoRA adapter GGUF served on a cached base GGUF.")


class ForgeJobConfig(dg.Config):
    training: TrainingRunConfig = Field(TrainingRunConfig(), description="LoRA training overrides.")
    export: ExportRunConfig = Field(ExportRunConfig(), description="GGUF export options.")


class LaunchConfigError(dg.DagsterError):
    """A launch refused before any run exists; the message names each field, value and allowed range."""


def plain(values: dict) -> dict:
    """Config values as run config: unset fields dropped, Enum choices as their plain values."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items() if v is not None}


def logging_config() -> dict:
    """The terminal log level of a run (FORGE_DAGSTER_LOG_LEVEL, default INFO)."""
    return {"loggers": {"console": {"config": {"log_level": load_config().dagster_log_level.upper()}}}}


@dg.config_mapping
def forge_job_config(config: ForgeJobConfig) -> dict:
    training = overrides_from_launchpad(config.training.model_dump())
    problems = validate_overrides({**load_config().training_overrides(), **training})
    if problems:
        raise LaunchConfigError("forge_job not started, the training config is invalid: " + "; ".join(problems))
    return {"ops": {"lora_adapter": {"config": plain(config.training.model_dump())},
                    "model_export": {"config": plain(config.export.model_dump())}}, **logging_config()}
