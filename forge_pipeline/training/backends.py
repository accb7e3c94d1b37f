"""Loading the base model with LoRA attached: unsloth on CUDA (4-bit base, unsloth gradient checkpointing),
transformers + peft elsewhere (bitsandbytes 4-bit on CUDA without unsloth, full precision on the CPU)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

from forge_pipeline.training.base_model import ResolvedBase
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.errors import TrainingError


@dataclass
class LoadedModel:
    model: Any  # a peft model with LoRA matrices
    tokenizer: Any  # chat template and pad token set
    packed_attention: Optional[str]  # what unsloth runs packed rows with; None: transformers' own attention


def choose_backend(requested: str, cuda: bool) -> str:
    if requested == "transformers":
        return "transformers"
    if requested == "unsloth":
        if not cuda:
            raise TrainingError("the unsloth backend needs a CUDA GPU; use backend='transformers' on the CPU")
        return "unsloth"
    if cuda:
        try:
            if importlib.util.find_spec("unsloth") is not None:
                return "unsloth"
        except (ImportError, ValueError):
            pass
    return "transformers"


def prepare_tokenizer(tok) -> None:
    """The chat template the adapter is trained (and served) with (the base's own, else its family's turn
    tokens, else the plain-text default: training/chat_template.py), and a pad token."""
    from forge_pipeline.training.chat_template import prepare_tokenizer as choose_template

    choose_template(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _skip_kwargs(get_peft_model, layers: str) -> dict:
    """unsloth's checkpoint_skip_layers where this unsloth has it (2026.10 does); older ones recompute every
    layer, as before the setting existed."""
    import inspect

    try:
        takes = "checkpoint_skip_layers" in inspect.signature(get_peft_model).parameters
    except (TypeError, ValueError):
        takes = False
    layers = layers if layers in ("auto", "max") else int(layers)  # TrainingConfig keeps it as text: "auto", "max", "3"
    return {"checkpoint_skip_layers": layers} if takes and layers != 0 else {}


def _kept_layers(model) -> list:
    """Decoder layers that keep their activations (unsloth marks each one it takes out of checkpointing)."""
    return [m for m in model.modules() if m.__dict__.get("_unsloth_skip_checkpoint")]


def uncheckpointed_layers(model) -> int:
    return len(_kept_layers(model))


def size_skip_planner_for_one_row(model, tokens: int) -> None:
    """Packed and padding-free batches are one row of up to batch x max_seq_length tokens. unsloth's
    checkpoint_skip_layers="auto" planner sizes for batch rows of max_seq_length *times* the measured row, so
    it over-counted the 8B nightly's 5 packed rows 5x: 17 of 32 layers kept, 15.3 GiB peak on an 80 GB H100,
    where all 32 took 20.4 GiB at 4 rows (bench/results/raw/h100_20261207s10). Set after the trainer is built:
    unsloth's Trainer.__init__ writes these two fields (unsloth.models._utils._size_auto_checkpoint_skip_for_trainer)."""
    planner = getattr(model, "_unsloth_auto_skip", None)
    if planner is not None and hasattr(planner, "target_batch") and hasattr(planner, "target_seq"):
        planner.target_batch, planner.target_seq = 1, tokens


def checkpoint_every_layer(model) -> int:
    """Undo checkpoint_skip_layers (the first answer to a CUDA out-of-memory error): every layer recomputes its
    activations again and unsloth's planner, if it has not run yet, is removed. Returns the layers changed.
    unsloth has no public undo; a marked layer's flag is a property that reads the mark first
    (unsloth.models._utils._skip_aware_flag), so dropping the mark restores the layer's own flag."""
    planner = getattr(model, "_unsloth_auto_skip", None)
    if planner is not None:
        planner.remove()
    marked = _kept_layers(model)
    # A marked layer whose own flag was never set would read False: give it the flag the other layers read,
    # else whether the model was set up to checkpoint at all (get_peft_model records its choice).
    flag = next((m.gradient_checkpointing for m in model.modules()
                 if hasattr(m, "gradient_checkpointing") and m not in marked and m.gradient_checkpointing),
                bool(getattr(model, "_unsloth_gradient_checkpointing", False)))
    for module in marked:
        del module.__dict__["_unsloth_skip_checkpoint"]
        module.__dict__.setdefault("_unsloth_gc_flag", flag)
    if marked:
        try:  # unsloth's activation offloading counted the checkpointed layers in the first step: recount
            from unsloth_zoo.gradient_checkpointing import reset_unsloth_gradient_checkpointing_buffers

            reset_unsloth_gradient_checkpointing_buffers()
        except ImportError:
            pass
    return len(marked)


def load_model(backend: str, base: ResolvedBase, cfg: TrainingConfig, cuda: bool) -> LoadedModel:
    import torch
    from transformers import set_seed

    if backend == "unsloth":
        import unsloth  # noqa: F401  (must be imported before transformers patches apply)
        from unsloth import FastLanguageModel

        from forge_pipeline.training import unsloth_varlen

        attention = unsloth_varlen.enable()
        model, tok = FastLanguageModel.from_pretrained(base.path, max_seq_length=cfg.max_seq_length,
                                                       load_in_4bit=True, dtype=None)
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules, bias="none", use_gradient_checkpointing="unsloth",
            random_state=cfg.seed, **_skip_kwargs(FastLanguageModel.get_peft_model, cfg.checkpoint_skip_layers))
        prepare_tokenizer(tok)
        return LoadedModel(model, tok, attention)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.path)
    if cuda:
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base.path, quantization_config=bnb, dtype=torch.bfloat16,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, attn_implementation="eager")
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")
    # LoRA's A matrices are drawn from the global RNG here, before the trainer seeds anything: seed it, or
    # two runs of the same data and settings differ (max |dw| 0.26 measured, issue 11 item 13).
    set_seed(cfg.seed)
    peft_model = get_peft_model(model, lora)
    prepare_tokenizer(tok)
    return LoadedModel(peft_model, tok, None)  # transformers' own attention handles packed rows
