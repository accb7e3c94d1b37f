"""The base's seeded turn rows (training/turn_tokens.py) written into a GGUF forge converted, in place, before
it is quantized: the converter reads the base's weights from disk, where a Llama 3 base's chat tokens are zero,
while training seeded them in memory. Without this the served model reads and predicts other rows than the
trained one (the evaluation's fidelity KLD against the trainer's reference says how far:
test_turn_tokens.py).

Everything the rule needs is in the GGUF itself: the vocabulary, the EOS id and the chat template (the
adapter's, which export/base_gguf.py puts in the base GGUF), so the same plan_seeds decides here as in
training. Only f16 and f32 tensors are written (every conversion here is f16; a quantized row cannot be
copied exactly).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from forge_pipeline.export.merge import ExportError

EMBEDDING, OUTPUT = "token_embd.weight", "output.weight"


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def seed_gguf_turn_rows(path: Path) -> dict[str, str]:
    """Seed the untrained turn rows of the GGUF at ``path`` in place; {token: source}, empty when none were."""
    import torch
    from gguf import GGUFReader

    from forge_pipeline.training.turn_tokens import MEAN, Rows, plan_seeds, template_turn_tokens

    reader = GGUFReader(str(path), "r")
    template = _field(reader, "tokenizer.chat_template")  # None: the family's, from the vocabulary (plan_seeds)
    if template and template_turn_tokens(template) is None:  # plain text: before reading a 128k-token vocabulary
        return {}
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    eos_id = _field(reader, "tokenizer.ggml.eos_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    tensors = {t.name: t for t in reader.tensors if t.name in (EMBEDDING, OUTPUT)}
    if EMBEDDING not in tensors:
        return {}
    for t in tensors.values():
        if t.data.dtype not in (np.float16, np.float32):
            raise ExportError(f"{path}: {t.name} is {t.tensor_type.name}, not f16/f32: cannot seed its turn rows")
    rows = {name: Rows(torch.from_numpy(np.asarray(t.data, dtype=np.float32))) for name, t in tensors.items()}

    def untrained(row: int) -> bool:
        return rows[EMBEDDING].is_untrained(row) or (OUTPUT in rows and rows[OUTPUT].is_zero(row))

    eos = tokens[eos_id] if eos_id is not None and 0 <= eos_id < len(tokens) else None
    seeds = plan_seeds(template, vocab, eos, untrained)
    if not seeds:
        return {}
    del reader
    writable = GGUFReader(str(path), "r+")
    for t in writable.tensors:
        if t.name not in rows:
            continue
        for s in seeds:
            value = rows[t.name].trained_mean() if s.source == MEAN else rows[t.name].w[vocab[s.source]]
            t.data[s.row] = value.numpy().astype(t.data.dtype)
    writable.data.flush()
    del writable
    return {s.token: s.source for s in seeds}
