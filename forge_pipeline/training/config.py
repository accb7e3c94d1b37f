"""Training hyperparameters: the seed's GPU defaults, and documented CPU defaults that finish the main job
on a 2-core machine within minutes."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Used when the base tokenizer has none. Plain-text role markers work with any vocabulary; the template
# renders bos_token itself because chat-templated text is tokenized without added special tokens (by
# TRL in training and by llama.cpp in serving), and ends each assistant turn with eos_token, which is what
# stops generation. It is saved with the adapter and written into the GGUF.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


class TrainingConfig(BaseModel):
    """LoRA/QLoRA fine-tuning settings (the seed's defaults: r=16, alpha=32, lr 2e-4, 3 epochs, batch 4 x 4)."""

    base_model: Optional[str] = Field(None, description="Hub id, local HF directory or .gguf file; "
                                      "default: Llama 3.1 8B bnb-4bit on CUDA, the embedded Gemma 3 270M on CPU.")
    backend: Literal["auto", "unsloth", "transformers"] = Field("auto", description="auto: unsloth on CUDA when "
                                                                "installed, else transformers + peft + trl.")
    lora_rank: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    learning_rate: float = Field(2e-4, gt=0)
    num_epochs: float = Field(3, gt=0)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(4, ge=1)
    max_seq_length: int = Field(1024, ge=16)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler_type: str = Field("cosine", description="Any transformers scheduler name.")
    seed: int = 42
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: run all epochs).")
    packing: bool = Field(False, description="Pack short examples into full-length rows.")
    packing_strategy: Literal["bfd", "wrapped"] = Field("bfd", description="bfd: best-fit rows of whole examples, "
                                                         "each attending only to itself (flash varlen under unsloth); "
                                                         "wrapped: concatenate and cut into full rows, splitting "
                                                         "examples at row ends.")
    padding_free: Optional[bool] = Field(None, description="Unpacked batches as one row without padding. None: "
                                         "with unsloth, only when padded batches would be over 15% padding "
                                         "(batch_layout.py); padded rows elsewhere.")
    loss_type: Literal["nll", "chunked_nll"] = Field("nll", description="nll lets the model (and unsloth's fused "
                                                     "cross-entropy) compute the loss; TRL's chunked_nll adds "
                                                     "per-step metrics at a measurable cost on small shapes.")
    eval_steps: Optional[int] = Field(None, description="Evaluate every N steps (default: once per epoch).")
    save_steps: Optional[int] = Field(None, description="Checkpoint every N steps (default: once per epoch).")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    early_stopping_patience: Optional[int] = Field(None, description="Stop after N evals without improvement.")
    min_examples: int = Field(10, ge=1, description="Fewer training examples is an error before any model loads.")

    def fingerprint_fields(self) -> dict:
        """The settings that change the trained weights (logging cadence does not). Integral floats are
        written as ints, so 3 and 3.0 epochs (e.g. after a JSON round trip) fingerprint alike."""
        fields = self.model_dump(exclude={"logging_steps", "save_total_limit", "backend"})
        return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in fields.items()}


CPU_DEFAULTS = dict(
    # 2-core CPU: one pass over short sequences, no accumulation, capped steps. Measured on the sample vault
    # with Gemma 3 270M: the whole forge_job stays well inside 15 minutes.
    num_epochs=1, gradient_accumulation_steps=1, max_seq_length=256, max_steps=24, logging_steps=2,
    eval_steps=12, save_steps=12,
)


def default_training_config(cuda: bool) -> TrainingConfig:
    return TrainingConfig() if cuda else TrainingConfig(**CPU_DEFAULTS)
