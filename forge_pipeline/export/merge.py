"""LoRA adapter + base -> a merged 16-bit Hugging Face model (never merged into 4-bit weights)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from forge_pipeline.files import publish_dir


class ExportError(RuntimeError):
    """The adapter cannot be merged or exported; the message says why."""


def adapter_base_path(adapter_dir: Path) -> str:
    from forge_pipeline.training.manifest import AdapterManifest

    manifest = AdapterManifest.read_if_exists(adapter_dir)
    if manifest is not None:  # stored relative to FORGE_HOME: resolved here
        return manifest.base_model_path()
    cfg = Path(adapter_dir) / "adapter_config.json"
    if cfg.exists():
        return json.loads(cfg.read_text())["base_model_name_or_path"]
    raise ExportError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json)")


def _keep_sentencepiece_model(base_dir: Path, merged_dir: Path) -> None:
    """Carry the base's SentencePiece model into the merged directory.

    transformers 5 saves only tokenizer.json. From that, llama.cpp's converter writes just the tokenizer's own
    tokens, while from tokenizer.model it pads the vocabulary up to the embedding's rows; a model whose
    embedding is larger than its tokenizer (padded vocabularies) then fails to load in llama.cpp."""
    source = base_dir / "tokenizer.model"
    if source.is_file() and not (merged_dir / "tokenizer.model").exists():
        shutil.copy2(source, merged_dir / "tokenizer.model")


def load_base(base_path: str, dtype: str = "bfloat16", tokenizer_dir: Path | None = None):
    """The base model in 16-bit; a bitsandbytes 4-bit base (e.g. unsloth/...-bnb-4bit) is dequantized, so a
    LoRA delta is added to 16-bit weights, never rounded into 4-bit ones. With ``tokenizer_dir`` (an adapter's
    folder), its untrained turn rows are seeded as training seeded them (training/turn_tokens.py), so a merge
    or a reference built on it is the model that was trained."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype,
                                                device_map={"": 0} if torch.cuda.is_available() else None)
    if getattr(base, "is_quantized", False) or getattr(base.config, "quantization_config", None):
        base = base.dequantize()
        base = base.to(torch_dtype)
        if hasattr(base.config, "quantization_config"):
            del base.config.quantization_config
    if tokenizer_dir is not None:
        from forge_pipeline.training.publish import load_adapter_tokenizer
        from forge_pipeline.training.turn_tokens import seed_turn_rows

        seed_turn_rows(base, load_adapter_tokenizer(tokenizer_dir))
    return base


def load_base_16bit(base_path: str, output_path: Path, dtype: str = "bfloat16") -> Path:
    """A plain 16-bit HF copy of a quantized base (what llama.cpp's converter can read), with its tokenizer."""
    from transformers import AutoTokenizer

    output_path = Path(output_path)
    tmp = output_path.with_name(output_path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    load_base(base_path, dtype).save_pretrained(tmp, max_shard_size="5GB")
    AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
    return publish_dir(tmp, output_path)


def merge_only(checkpoint_path, output_path, base_model_path: str | None = None, dtype: str = "bfloat16") -> Path:
    """Merge the adapter at ``checkpoint_path`` into a 16-bit copy of its base; write an HF dir at ``output_path``.

    A base saved in bitsandbytes 4-bit (e.g. the seed's unsloth/...-bnb-4bit) is dequantized to 16-bit first,
    so the LoRA delta is added to 16-bit weights, not rounded into 4-bit ones.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    checkpoint_path, output_path = Path(checkpoint_path), Path(output_path)
    if not (checkpoint_path / "adapter_config.json").exists():
        raise ExportError(f"{checkpoint_path}: not a LoRA adapter (no adapter_config.json); train first")
    base_path = base_model_path or adapter_base_path(checkpoint_path)
    base = load_base(base_path, dtype, tokenizer_dir=checkpoint_path)
    merged = PeftModel.from_pretrained(base, str(checkpoint_path)).merge_and_unload()
    merged = merged.to(base.dtype)
    tmp = output_path.with_name(output_path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, max_shard_size="5GB")
    tok = AutoTokenizer.from_pretrained(str(checkpoint_path))
    tok.save_pretrained(tmp)
    _keep_sentencepiece_model(Path(base_path), tmp)
    template = checkpoint_path / "chat_template.jinja"
    if template.exists():
        shutil.copy2(template, tmp / "chat_template.jinja")
    publish_dir(tmp, output_path)
    return output_path
