"""Give a base's untrained turn tokens trained rows, so a LoRA fine-tune can learn to end a turn — the same
rows wherever the base is used: in training (in memory), in every GGUF forge converts (export/turn_rows.py
writes them into the f16 file before it is quantized), and wherever the base is loaded again (merge, the
evaluation's fallback reference, the export's parity check). A user's base folder is never rewritten.

A pretrained (not instruct) base has its family's turn tokens in the vocabulary but never saw them in
training: their embedding rows stay where initialisation put them. Measured on the embedded Gemma 3 270M:
``<end_of_turn>`` has 4,664 rows within cosine 0.99 of its own (``<pad>``, ``<unusedN>``, byte tokens...),
``<eos>``, ``<bos>`` and ``<start_of_turn>`` none. The output layer is tied to those rows, so whatever a
fine-tune does to the hidden state raises thousands of logits together with the end-of-turn one, and sampling
picks a neighbour: served answers ran to the token limit with ``slotBox``, ``spacePad``, ``MINUTE``,
``<unused1401>`` where the turn should have ended (0 of 8 probe answers ended; p(<end_of_turn>) where each
eval answer ends 0.0004, rank 35). Llama 3's base leaves its chat tokens (``<|eot_id|>``, the header tokens)
at zero instead (unsloth issues #915 and #929, torchtune #2429), and ships the instruct template as its own.

The end-of-turn token gets the rows (embedding, and output row when untied) of the base's own EOS: the base
already predicts EOS where a text ends, so the fine-tune only has to learn that an answer ends there. Same
data, same 48 steps on the embedded Gemma: p(<end_of_turn>) 0.36 (top-1 at every answer end), 8 of 8 probe
answers ended, 26 tokens on average instead of 256, held-out eval loss 4.12 -> 3.83 (measured 2026-12-07 on
the sample vault's curated set with serving's sampling, transformers + peft). llama.cpp stops at EOS too, so
an answer that ends with the (now equal-scoring) EOS also ends cleanly.

The template's other turn tokens (Llama 3's header tokens, a start-of-turn token) are only ever read, never
meant to be written: they get the mean of the trained rows, as unsloth's ``fix_untrained_tokens`` gives
every untrained token (and as it would do in memory only, on the unsloth path, at the start of training: rows
seeded here are no longer untrained, so it leaves them, and the served file has what training had). The mean
is rounded to bfloat16 on every side, so training (bf16 or fp32) and the f16 GGUF hold the same value. A mean
is no end-of-turn row: for a tied or untied output layer it lies inside the trained rows' hull and can never
be the most likely token, which is why the end of turn copies EOS instead.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from forge_pipeline.training.chat_template import TURN_FORMATS

# A row with this many other rows within NEAR_COSINE of it is one of the untrained cluster: the embedded
# Gemma's <end_of_turn> has 4,664 and <pad> 5,836, while its trained rows (<eos>, <bos>, <start_of_turn>,
# ordinary words) have none.
NEAR_COSINE = 0.99
UNTRAINED_MIN_NEIGHBOURS = 64
# A row this much shorter than the median row is zero for our purposes (a trained row is of the median's order).
ZERO_ROW = 1e-4
MEAN = "mean of trained rows"
# Bump when the rows seeded here change: cached base GGUFs (export/base_gguf.py) and adapters trained on the
# old rows are then rebuilt. 2: own templates seeded too (Llama 3's base), header/start tokens from the mean.
SEEDING_FORMAT = 2


@dataclass(frozen=True)
class Seed:
    token: str
    row: int
    source: str  # a token whose rows are copied, or MEAN


class Rows:
    """Questions about one weight matrix (vocab x hidden, any float dtype, on its own device), answered in
    chunks of rows: an 8B's embedding is 1 GB in bf16, 2 GB as one float32 copy and 4 GB in float64, and those
    copies would sit beside the model on the GPU before training starts. Norms are computed once."""

    CHUNK = 8192  # rows: 8192 x 4096 x 8 bytes = 256 MB of float64 at most

    def __init__(self, weight):
        import torch

        self.w = torch.as_tensor(weight).detach()
        self.norms = torch.cat([self._chunk(i).norm(dim=1) for i in range(0, len(self.w), self.CHUNK)])
        self.median = float(self.norms.median())
        self._mean = None

    def _chunk(self, i: int, dtype=None):
        import torch

        return self.w[i:i + self.CHUNK].to(dtype or torch.float32)

    def row(self, i: int):
        return self.w[i].float()

    def is_zero(self, row: int) -> bool:
        return float(self.norms[row]) <= ZERO_ROW * self.median

    def near(self, row: int, cosine: float = NEAR_COSINE) -> int:
        """How many other rows lie within ``cosine`` of row ``row``."""
        import torch

        v, tiny = self.row(row), torch.finfo(torch.float32).tiny
        n = sum(int(((self._chunk(i) @ v) / (self.norms[i:i + self.CHUNK] * self.norms[row]).clamp_min(tiny)
                     > cosine).sum()) for i in range(0, len(self.w), self.CHUNK))
        return n - 1

    def is_untrained(self, row: int) -> bool:
        """Never moved by pretraining: one of a cluster of near-identical rows (Gemma's unused rows), or all
        zeros (Llama 3's chat tokens), which no cosine can see."""
        return self.is_zero(row) or self.near(row) >= UNTRAINED_MIN_NEIGHBOURS

    def trained_mean(self):
        """The mean of the rows that are not zero, summed in float64 and rounded to bfloat16 (then float32):
        the same value from a bf16 base loaded in bf16 or fp32 and from its f16 GGUF (bf16 values are exact in
        both, down to f16's subnormals). A base stored in fp32 has rows its f16 GGUF rounds, so there the two
        means may differ by one bfloat16 step in a component: far below what a q4_k_m base's own rounding
        moves. Computed once (before any row is seeded, by the callers' order)."""
        import torch

        if self._mean is None:
            keep = self.norms > ZERO_ROW * self.median
            total = sum(self._chunk(i, torch.float64)[keep[i:i + self.CHUNK]].sum(0)
                        for i in range(0, len(self.w), self.CHUNK))
            self._mean = (total / int(keep.sum())).to(torch.bfloat16).float()
        return self._mean


def template_turn_tokens(template: str | None) -> tuple[str, tuple[str, ...]] | None:
    """(end-of-turn token, the template's other turn tokens) for a template in a known family's format."""
    if not template:
        return None
    for fmt in TURN_FORMATS:
        if fmt.turn_tokens[-1] in template or fmt.stops[0] in template:
            stop = fmt.stops[0]
            return stop, tuple(t for t in fmt.turn_tokens if t != stop and t in template)
    return None


def plan_seeds(template: str | None, vocab: Mapping[str, int], eos_token: str | None,
               untrained: Callable[[int], bool]) -> list[Seed]:
    """Which rows to seed, from what: the one rule every side applies (training, GGUF, reloads). ``template``
    is the one training uses; None (a base without one) means its family's, as chat_template.py chooses."""
    if not (isinstance(template, str) and template.strip()):
        template = next((f.template for f in TURN_FORMATS if all(t in vocab for t in f.turn_tokens)), None)
    turn = template_turn_tokens(template)
    if turn is None:
        return []
    stop, others = turn
    seeds = []
    if stop in vocab and eos_token in vocab and stop != eos_token and untrained(vocab[stop]) \
            and not untrained(vocab[eos_token]):
        seeds.append(Seed(stop, vocab[stop], eos_token))
    seeds += [Seed(t, vocab[t], MEAN) for t in others if t in vocab and untrained(vocab[t])]
    return seeds


def planned_rows(template: str | None, vocab: Mapping[str, int], eos_token: str | None, embed: Rows,
                 out: Rows | None) -> tuple[list[Seed], list[tuple[str, int, object]]]:
    """The seeds for these matrices (``out`` None when the output layer is tied), and the writes they make:
    (``"embed"`` or ``"out"``, row, value as float32), every value read before any row is written. Both
    appliers, in memory (seed_turn_rows) and in a GGUF (export/turn_rows.py), only write what this returns."""

    def untrained(row: int) -> bool:
        return embed.is_untrained(row) or (out is not None and out.is_zero(row))

    seeds = plan_seeds(template, vocab, eos_token, untrained)
    writes = [(name, s.row, rows.trained_mean() if s.source == MEAN else rows.row(vocab[s.source]).clone())
              for s in seeds for name, rows in (("embed", embed), ("out", out)) if rows is not None]
    return seeds, writes


def seed_turn_rows(model, tokenizer) -> dict[str, str]:
    """Seed ``model``'s untrained turn rows in place (input embedding, and the output layer when untied), for
    the template ``tokenizer`` trains with. Returns {token: what it was seeded from}, empty when nothing was
    untrained (an instruct base, or a base forge converted and seeded already)."""
    import torch

    embed = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    weights = {"embed": embed}
    if out is not None and out.weight.data_ptr() != embed.data_ptr():  # untied
        weights["out"] = out.weight
    seeds, writes = planned_rows(getattr(tokenizer, "chat_template", None), tokenizer.get_vocab(), tokenizer.eos_token,
                                 Rows(embed), Rows(weights["out"]) if "out" in weights else None)
    with torch.no_grad():
        for name, row, value in writes:
            weights[name][row] = value.to(weights[name].dtype).to(weights[name].device)
    return {s.token: s.source for s in seeds}
