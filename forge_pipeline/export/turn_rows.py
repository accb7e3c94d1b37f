"""The base's seeded turn rows (training/turn_tokens.py) written into a GGUF forge converted, in place, before
it is quantized: the converter reads the base's weights from disk, where a Llama 3 base's chat tokens are zero,
while training seeded them in memory. Without this the served model reads and predicts other rows than the
trained one (measured on a tiny Llama 3-shaped base: served-vs-trained KLD 4.1e-4 and top-1 agreement 0.975
instead of 9e-10 and 1.0, test_turn_tokens.py).

Everything the rule needs is in the GGUF itself: the vocabulary, the EOS id and the chat template (the
adapter's, which export/base_gguf.py puts in the base GGUF; without one, the family's the vocabulary
implies, as training would choose), so the same plan_seeds decides here as in training. The header is read
with serving's own reader (gguf's GGUFReader took 27 s over the embedded Gemma's 262k-token vocabulary on
this machine) and the two tensors are mapped with numpy. Only f16 and f32 rows can be written (every
conversion here is f16; a quantized row cannot be copied exactly).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from forge_pipeline.export.merge import ExportError

EMBEDDING, OUTPUT = "token_embd.weight", "output.weight"
GGML_TYPES = {0: np.float32, 1: np.float16}  # ggml's F32 and F16


def seed_gguf_turn_rows(path: Path) -> dict[str, str]:
    """Seed the untrained turn rows of the GGUF at ``path`` in place; {token: source}, empty when none were."""
    import torch

    from forge_pipeline.training.turn_tokens import Rows, planned_rows, template_turn_tokens
    from serving.gguf_header import read_gguf_header

    header = read_gguf_header(Path(path), arrays=("tokenizer.ggml.tokens",))
    meta = header.metadata
    template = meta.get("tokenizer.chat_template")  # None: the family's, from the vocabulary (plan_seeds)
    if template and template_turn_tokens(template) is None:  # a plain-text template has no turn token
        return {}
    tokens = meta.get("tokenizer.ggml.tokens")
    infos = {t.name: t for t in header.tensors if t.name in (EMBEDDING, OUTPUT)}
    if not isinstance(tokens, list) or EMBEDDING not in infos:
        return {}
    vocab = {t: i for i, t in enumerate(tokens)}

    def mapped(name: str, mode: str = "r"):
        t = infos[name]
        dtype = GGML_TYPES.get(t.ggml_type)
        if dtype is None:
            raise ExportError(f"{path}: {name} has ggml type {t.ggml_type}, not f16/f32: cannot seed its turn rows")
        return np.memmap(path, dtype=dtype, mode=mode, offset=header.data_offset + t.offset, shape=t.shape[::-1])

    rows = {name: Rows(torch.from_numpy(np.asarray(mapped(name)))) for name in infos}
    eos_id = meta.get("tokenizer.ggml.eos_token_id")
    eos = tokens[eos_id] if isinstance(eos_id, int) and 0 <= eos_id < len(tokens) else None
    seeds, writes = planned_rows(template, vocab, eos, rows[EMBEDDING], rows.get(OUTPUT))
    for name, tensor in (("embed", EMBEDDING), ("out", OUTPUT)):
        mine = [(row, value) for which, row, value in writes if which == name]
        if not mine:
            continue
        w = mapped(tensor, "r+")
        for row, value in mine:
            w[row] = value.numpy().astype(w.dtype)
        w.flush()
        del w
    return {s.token: s.source for s in seeds}
