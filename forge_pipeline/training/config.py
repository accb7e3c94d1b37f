"""Training settings: one schema (`TrainingConfig`), its device defaults, and the one function that turns
overrides into a validated config (`resolve_training_config`).

Every entry point hands this module a plain dict of overrides and nothing else: the CLI's flags (generated
from the schema, cli/train.py), FORGE_TRAIN_* environment variables (`ForgeSettings.training_overrides()`)
and the launchpad's fields (`training_override_fields()`). Only that dict crosses a process boundary; the
process that trains resolves it for its own device (pipes_entry.py), so a CPU-only Dagster run worker
never decides a GPU node's defaults. This module imports only pydantic: the CLI and Dagster load it on
every start.
"""
from __future__ import annotations

import difflib
import enum
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEVICES = ("cuda", "cpu")
ENV_PREFIX = "FORGE_TRAIN_"

# transformers' SchedulerType values (checked against the installed transformers in test_training_config.py);
# listed here so a typo fails when the settings are read, not inside the trainer process.
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay", "greedy"]


class TrainingConfig(BaseModel):
    """LoRA/QLoRA fine-tuning settings (GPU defaults: r=16, alpha=32, lr 2e-4, 3 epochs, batch 4 x 4)."""

    model_config = ConfigDict(extra="forbid")

    base_model: Optional[str] = Field(None, description="Hub id, local HF directory or .gguf file; "
                                      "default: Llama 3.1 8B bnb-4bit on CUDA, the embedded Gemma 3 270M on CPU.")
    backend: Literal["auto", "unsloth", "transformers"] = Field("auto", description="auto: unsloth on CUDA when "
                                                                "installed, else transformers + peft + trl.")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1,
                                      description="Module names that get LoRA matrices.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    num_epochs: float = Field(3, gt=0, description="Passes over the training set (max_steps wins when set).")
    batch_size: int = Field(4, ge=1, description="Micro-batch size per step (halved on CUDA out-of-memory, "
                            "with accumulation doubled).")
    gradient_accumulation_steps: int = Field(4, ge=1, description="Micro-batches per optimizer step.")
    max_seq_length: int = Field(1024, ge=16, description="Longest training row in tokens; longer examples are cut.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    lr_scheduler_type: Scheduler = Field("cosine", description="Learning-rate schedule (transformers' names).")
    seed: int = Field(42, ge=0, description="Seeds LoRA initialisation, data order and dropout.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: run all epochs).",
                           json_schema_extra={"allowed": "-1 (run all epochs) or an integer >= 1"})
    packing: Optional[bool] = Field(None, description="Pack short examples into full-length rows. Unset: packed "
                                    "on CUDA when rows would hold 2+ examples and packed rows get unsloth's flash "
                                    "varlen attention, with accumulation lowered to keep the effective batch "
                                    "(batch_layout.choose_packing); unpacked elsewhere.")
    packing_strategy: Literal["bfd", "wrapped"] = Field("bfd", description="bfd: best-fit rows of whole examples, "
                                                         "each attending only to itself (flash varlen under unsloth); "
                                                         "wrapped: concatenate and cut into full rows, splitting "
                                                         "examples at row ends.")
    padding_free: Optional[bool] = Field(None, description="Unpacked batches as one row without padding. Unset: "
                                         "with unsloth, only when padded batches would be over 15% padding "
                                         "(batch_layout.py); padded rows elsewhere.")
    checkpoint_skip_layers: str = Field(
        "auto", description="unsloth backend: decoder layers that keep their activations instead of recomputing "
        "them in the backward pass (gradient checkpointing recomputes each layer's forward, about a third of a "
        "step's compute). auto: as many as fit in the GPU's free memory, sized by unsloth after the first step; "
        "max: all; 0: every layer recomputed (unsloth's default, the least memory). Does not change the trained "
        "weights. A CUDA out-of-memory error first puts every layer back to recomputing, then halves the batch.",
        json_schema_extra={"allowed": "auto, max or a layer count >= 0, as text (\"4\" in the launchpad)"})
    loss_type: Literal["nll", "chunked_nll"] = Field("nll", description="nll lets the model (and unsloth's fused "
                                                     "cross-entropy) compute the loss; TRL's chunked_nll adds "
                                                     "per-step metrics at a measurable cost on small shapes.")
    eval_steps: Optional[int] = Field(None, ge=1, description="Evaluate every N steps (unset: once per epoch).")
    save_steps: Optional[int] = Field(None, ge=1, description="Checkpoint every N steps (unset: once per epoch).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk while training.")
    logging_steps: int = Field(5, ge=1, description="Log the loss every N steps.")
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="Stop after N evals without improvement "
                                                   "(unset: never stop early).")
    min_examples: int = Field(10, ge=1, description="Fewer training examples is an error before any model loads.")

    @field_validator("max_steps")
    @classmethod
    def _no_zero_steps(cls, v: int) -> int:
        if v == 0:
            raise ValueError("0 steps would train nothing")
        return v

    @field_validator("checkpoint_skip_layers", mode="before")
    @classmethod
    def _layers_or_choice(cls, v) -> str:
        # text, not Union[Literal, int]: Dagster's launchpad config has no unions (one owner, every surface)
        v = str(v).strip().lower()
        if v in ("auto", "max"):
            return v
        if not re.fullmatch(r"[0-9]+", v):  # not str.isdigit, which takes "²"
            raise ValueError("expected auto, max or a layer count >= 0")
        return str(int(v))

    def summary(self) -> str:
        """One line a person reads at the start of a run; the full config goes to the adapter's manifest."""
        base = "the default base model"
        if self.base_model:  # a local folder or GGUF by its name; a hub id whole
            base = "base model " + (Path(self.base_model).name if Path(self.base_model).exists() else self.base_model)
        length = f"{self.max_steps} steps" if self.max_steps > 0 else f"{self.num_epochs:g} epochs"
        return (f"{base}, backend {self.backend}, {length}, batch {self.batch_size} x "
                f"{self.gradient_accumulation_steps}, lr {self.learning_rate:g}, LoRA r{self.lora_rank} "
                f"(alpha {self.lora_alpha})")

    def fingerprint_fields(self) -> dict:
        """The settings that change the trained weights (logging cadence does not). Integral floats are
        written as ints, so 3 and 3.0 epochs (e.g. after a JSON round trip) fingerprint alike."""
        fields = self.model_dump(exclude={"logging_steps", "save_total_limit", "backend",
                                         "checkpoint_skip_layers"})
        return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in fields.items()}


# The one place the CPU default lives (the quality issue measures the step count; change it here).
CPU_DEFAULTS = dict(
    # 2-core CPU: short sequences, no accumulation, capped steps (max_steps wins over num_epochs). The cap
    # comes from bench/results/quality.json's step curve on the sample vault with Gemma 3 270M: 24 steps
    # gave held-out eval loss 4.229 (base 5.268) with 1 of 8 probe answers looping; 48 steps 4.100 with none
    # looping, for ~2.5 more minutes of training on 2 cores (5.5 s a step), keeping forge_job well inside
    # its 15-minute budget. 96 steps (~9 min of training) did not fit this round's measuring time.
    num_epochs=1, gradient_accumulation_steps=1, max_seq_length=256, max_steps=48, logging_steps=2,
    eval_steps=24, save_steps=24,
)
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {"cuda": {}, "cpu": CPU_DEFAULTS}


class TrainingConfigError(ValueError):
    """Overrides that do not make a valid TrainingConfig; each problem names the field, the value given and
    what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid training settings: " + "; ".join(problems))


def field_names() -> list[str]:
    return list(TrainingConfig.model_fields)


def unwrap_optional(annotation):
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def allowed_values(name: str) -> str:
    """What a field accepts, in words, from the schema itself (so help text and errors never drift)."""
    info = TrainingConfig.model_fields[name]
    extra = info.json_schema_extra or {}
    if isinstance(extra, dict) and "allowed" in extra:
        return str(extra["allowed"])
    annotation, optional = unwrap_optional(info.annotation)
    unset = " (or unset)" if optional else ""
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation)) + unset
    if annotation is bool:
        return "true or false" + unset
    if typing.get_origin(annotation) is list:
        return "a non-empty list of names (environment: a JSON list)" + unset
    if annotation in (int, float):
        kind = "an integer" if annotation is int else "a number"
        bounds = []
        for m in info.metadata:
            for cls, op in ((Gt, ">"), (Ge, ">="), (Lt, "<"), (Le, "<=")):
                if isinstance(m, cls):
                    bounds.append(f"{op} {getattr(m, cls.__name__.lower())}")
        return kind + (" " + " and ".join(bounds) if bounds else "") + unset
    return "text" + unset


def default_for(name: str, device: str) -> Any:
    """The default a field takes on ``device`` ("cuda" or "cpu")."""
    if name in DEVICE_DEFAULTS[device]:
        return DEVICE_DEFAULTS[device][name]
    return TrainingConfig.model_fields[name].get_default(call_default_factory=True)


def describe_default(name: str) -> str:
    """'3' or '3 on CUDA, 1 on CPU' for device-dependent defaults; 'unset' where None means 'decided later'."""
    gpu, cpu = default_for(name, "cuda"), default_for(name, "cpu")
    show = lambda v: "unset" if v is None else json.dumps(v) if isinstance(v, list) else str(v)  # noqa: E731
    return show(gpu) if gpu == cpu else f"{show(gpu)} on CUDA, {show(cpu)} on CPU"


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problems(exc: ValidationError, given: dict) -> list[str]:
    out = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        if name not in TrainingConfig.model_fields:
            out.append(f"{name}: {err['msg']}")
            continue
        value = given.get(name, err.get("input"))
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{name}={value!r}: {msg}; allowed: {allowed_values(name)}")
    return out


def resolve_training_config(overrides: dict | None, device: str) -> TrainingConfig:
    """Overrides (None values mean "not set") on top of ``device``'s defaults, validated.

    Raises TrainingConfigError naming each bad field, its value and the allowed range, or an unknown name
    with the nearest known one. Strings are accepted for numbers and booleans ("2e-4", "true"), as they
    arrive from the environment."""
    if device not in DEVICES:
        raise TrainingConfigError([f"device={device!r}: allowed: one of {', '.join(map(repr, DEVICES))}"])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = field_names()
    unknown = [f"unknown setting {k!r}{_did_you_mean(k, known)}" for k in overrides if k not in known]
    if unknown:
        raise TrainingConfigError(unknown)
    try:
        return TrainingConfig.model_validate({**DEVICE_DEFAULTS[device], **overrides})
    except ValidationError as e:
        raise TrainingConfigError(_problems(e, overrides)) from None


def validate_overrides(overrides: dict | None) -> list[str]:
    """Every problem the overrides have on either device (empty when they are valid on both): for checks
    made before a run starts, on a machine that is not the one that will train."""
    problems: list[str] = []
    for device in DEVICES:
        try:
            resolve_training_config(overrides, device)
        except TrainingConfigError as e:
            problems += [p for p in e.problems if p not in problems]
    return problems


def default_training_config(cuda: bool) -> TrainingConfig:
    return resolve_training_config({}, "cuda" if cuda else "cpu")


def parse_env_value(name: str, raw: str) -> Any:
    """An environment string for field ``name``: lists are JSON, everything else is left to the schema."""
    annotation, _ = unwrap_optional(TrainingConfig.model_fields[name].annotation)
    if typing.get_origin(annotation) is list:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise TrainingConfigError([f"{ENV_PREFIX}{name.upper()}={raw!r}: expected a JSON list, "
                                       f"e.g. '[\"q_proj\", \"v_proj\"]'"])
        return value
    return raw


def training_override_fields() -> dict[str, tuple[Any, Any]]:
    """Fields for a launchpad config class, one per TrainingConfig field, each optional (unset: the training
    device's default), typed and described like the schema:
    ``pydantic.create_model("TrainingRunConfig", __base__=dagster.Config, **training_override_fields())``.
    Choices become Enums (Dagster's config has no Literal; an Enum is a drop-down the launchpad checks);
    ranges are not: call validate_overrides(overrides_from_launchpad(config.model_dump())) before launching."""
    out = {}
    for name, info in TrainingConfig.model_fields.items():
        annotation, _ = unwrap_optional(info.annotation)
        if typing.get_origin(annotation) is Literal:
            choices = typing.get_args(annotation)
            annotation = enum.Enum("".join(p.title() for p in name.split("_")), [(c, c) for c in choices], type=str)
        desc = f"{info.description or name} Allowed: {allowed_values(name)}. Default: {describe_default(name)}."
        out[name] = (Optional[annotation], Field(None, description=desc))
    return out


def overrides_from_launchpad(values: dict) -> dict:
    """A launchpad config's values as overrides: unset fields dropped, Enum choices as their plain values."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items() if v is not None}
