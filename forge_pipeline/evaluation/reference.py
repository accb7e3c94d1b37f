"""The trained model in Hugging Face form (base + LoRA adapter, unmerged, full precision): the reference the
served file is compared with, and the training tokenizer that defines the eval tokens."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _sequence(tok, msgs: list[dict], max_len: int) -> tuple[list[int], int] | None:
    prompt = list(tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=False))
    full = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=False))
    if full[:len(prompt)] != prompt or len(prompt) >= min(len(full), max_len):
        return None
    return full[:max_len], len(prompt)


def training_sequences(tok, rows: list[dict], max_len: int) -> list[tuple[list[int], int]]:
    """(ids of the whole conversation, index of the first answer token) per eval conversation, through the
    training tokenizer and template, truncated to max_len as training truncates; conversations with no
    answer token left are skipped."""
    return [s for row in rows if (s := _sequence(tok, row["messages"], max_len)) is not None]


def neutral_prompt_sequences(tok, rows: list[dict], max_len: int) -> list[tuple[list[int], int] | None]:
    """For each conversation training_sequences keeps, in its order, the same answer under
    metrics.NEUTRAL_PROMPT in place of everything before it but the system turn(s) (eval rows are one user
    turn and one answer), or None where that does not tokenize to the same answer tokens. The answer is cut
    where its own-prompt sequence cuts it (max_len): the shorter neutral prompt would otherwise keep more of
    a long answer, and the prompt gain would compare two different spans."""
    from forge_pipeline.evaluation.metrics import NEUTRAL_PROMPT

    out = []
    for row in rows:
        msgs = row["messages"]
        own = _sequence(tok, msgs, max_len)
        if own is None:
            continue
        neutral = [m for m in msgs[:-1] if m["role"] == "system"] + [{"role": "user", "content": NEUTRAL_PROMPT}]
        seq = _sequence(tok, neutral + [msgs[-1]], max_len)
        if seq is not None:
            answer = own[0][own[1]:]
            ids, start = seq
            seq = (ids[:start + len(answer)], start) if ids[start:start + len(answer)] == answer else None
        out.append(seq)
    return out


class ReferenceModel:
    """Loads lazily: the tokenizer is cheap and needed first; the weights only for the fidelity pass."""

    def __init__(self, adapter_dir: Path):
        from forge_pipeline.training.publish import load_adapter_tokenizer

        self.adapter_dir = Path(adapter_dir)
        if not (self.adapter_dir / "adapter_config.json").exists():
            raise FileNotFoundError(f"{self.adapter_dir}: no trained adapter (adapter_config.json) to evaluate")
        self.tokenizer = load_adapter_tokenizer(self.adapter_dir)
        self.model = None
        self.device = "cpu"

    def base_path(self) -> str:
        from forge_pipeline.training.manifest import AdapterManifest

        manifest = AdapterManifest.read_if_exists(self.adapter_dir)
        if manifest is not None:  # stored relative to FORGE_HOME: resolved here
            return manifest.base_model_path()
        return json.loads((self.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]

    def load(self) -> None:
        import torch
        from peft import PeftModel

        from forge_pipeline.export.merge import load_base

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # float32 on the CPU (the precision the CPU default trains in); bfloat16 on a GPU, where an 8B in
        # float32 would not fit beside the served file. Dequantized and turn rows seeded as training had them.
        base = load_base(self.base_path(), "bfloat16" if self.device == "cuda" else "float32",
                         tokenizer_dir=self.adapter_dir)
        self.model = PeftModel.from_pretrained(base, str(self.adapter_dir)).eval()

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.tensor([ids], device=self.device)).logits[0]
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
