"""How training batches are laid out (padded rows or one padding-free row) and how their tokens are counted."""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Measured on the H100 (bench/results/gpu_training_h100_layouts.jsonl): with rows of equal length unsloth's
# padded batches ran 1.37x (4x512) and 1.03x (4x2048) faster than padding-free ones. Padding-free wins back
# only the padding it removes, so it is chosen when a padded batch would waste more than this.
PADDING_FREE_ABOVE_WASTE = 0.15


def padding_waste(lengths: Sequence[int], batch_size: int, max_length: int, rounds: int = 256, seed: int = 0) -> float:
    """Expected share of a padded batch that is padding, for batches drawn at random from ``lengths``."""
    lengths = [min(int(n), max_length) for n in lengths if n > 0]
    if not lengths:
        return 0.0
    rng = random.Random(seed)
    real = padded = 0
    for _ in range(rounds):
        batch = [rng.choice(lengths) for _ in range(batch_size)]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1.0 - real / padded


def choose_padding_free(lengths: Sequence[int], batch_size: int, max_length: int) -> tuple[bool, float]:
    """(padding_free, expected padding waste) for unpacked training."""
    waste = padding_waste(lengths, batch_size, max_length)
    return waste > PADDING_FREE_ABOVE_WASTE, waste


class TokenCountingCollator:
    """Wraps the training data collator and records the real (non-padding) tokens of each batch it builds,
    in order, so tokens consumed by step N are the first N x accumulation entries (a data loader may build
    one batch ahead).

    Counting on the CPU side, from the collated tensors, keeps the GPU out of it: transformers' own
    counter reduces on the GPU and reads the result back every micro-batch (a sync), and it counts
    "not the pad id", which misses real tokens when the pad token doubles as EOS."""

    _OWN = ("inner", "batches")

    def __init__(self, inner: Callable):
        self.inner = inner
        self.batches: list[int] = []

    def __call__(self, examples):
        batch = self.inner(examples)
        mask = batch.get("attention_mask")
        if mask is not None:
            self.batches.append(int(mask.sum()))
        elif "packed_seq_lengths" in batch:
            self.batches.append(int(batch["packed_seq_lengths"].sum()))
        else:  # padding-free rows carry no padding
            self.batches.append(int(batch["input_ids"].numel()))
        return batch

    def tokens_through(self, micro_batches: int) -> int:
        return sum(self.batches[:micro_batches])

    # Anything else is the wrapped collator's: a library that sets or reads e.g. `torch_call` or
    # `padding_free` on the collator must reach the real one.
    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


def count_training_tokens(trainer) -> TokenCountingCollator:
    """Give the trainer's training data loader (not its evaluation ones) a counting collator."""
    counter = TokenCountingCollator(trainer.data_collator)
    build = trainer.get_train_dataloader

    def get_train_dataloader(*args, **kwargs):
        plain, trainer.data_collator = trainer.data_collator, counter
        try:
            return build(*args, **kwargs)
        finally:
            trainer.data_collator = plain

    trainer.get_train_dataloader = get_train_dataloader
    return counter


# Measured on the H100 (ENVIRONMENT.md, 8B nightly shape: 500 examples of 150-450 tokens, rows of 1024):
# padding-free micro-batches of 4 examples ran at 2,917 tokens/s (overhead-bound: each step carries ~1,200
# tokens), packed rows at 8,052-10,114 tokens/s. Packing pays when a row holds at least two examples on
# average, and only where packed rows attend per example on a fast kernel (unsloth's flash varlen); the CPU
# default is capped in steps, so packing there would only make each step longer.
PACK_WHEN_EXAMPLES_PER_ROW = 2.0


@dataclass(frozen=True)
class PackingChoice:
    packing: bool
    gradient_accumulation_steps: int
    examples_per_row: float  # expected examples in one packed row
    reason: str
    batch_size: int  # rows per micro-batch


def examples_per_row(lengths: Sequence[int], max_length: int) -> float:
    """Expected examples in one packed row of ``max_length`` tokens (1.0 with no lengths to measure)."""
    lengths = [min(int(n), max_length) for n in lengths if n > 0]
    return max_length / (sum(lengths) / len(lengths)) if lengths else 1.0


def choose_packing(lengths: Sequence[int], batch_size: int, grad_accum: int, max_length: int, *,
                   fast_packed_attention: bool) -> PackingChoice:
    """Whether to pack when the setting is left unset, and the micro-batch and accumulation that keep the
    effective batch.

    A packed row carries ``max_length / mean length`` examples, so at the same rows per step each optimizer
    step would see that many times the examples (the H100 run: 30 steps instead of 96, eval loss 2.32 vs
    2.05). The rows of one step are chosen so that it still sees about batch_size x gradient_accumulation_steps
    examples, and the step count and loss stay comparable; the speed comes from larger micro-batches, not
    from fewer updates. Those rows go in one micro-batch when they are at most twice the configured batch
    (each micro-batch costs a fixed ~0.13 s on the H100 besides its tokens: bare unsloth ran 4x512 in 0.29 s
    and 4x2048 in 0.78 s, bench/results/gpu_nightly_h100.json), else in the fewest accumulated micro-batches
    of at most twice the batch. Rounding accumulation alone (4 -> 1 at 3.3 examples per row) gave 4 rows, 13 examples
    per step and 123 steps for the seed's 96 on the H100 nightly."""
    if not any(n > 0 for n in lengths):
        return PackingChoice(False, grad_accum, 1.0, "no examples to measure", batch_size)
    per_row = examples_per_row(lengths, max_length)
    if not fast_packed_attention:
        return PackingChoice(False, grad_accum, per_row, "no fast per-example attention for packed rows here",
                             batch_size)
    if per_row < PACK_WHEN_EXAMPLES_PER_ROW:
        return PackingChoice(False, grad_accum, per_row, f"examples fill rows ({per_row:.1f} per row)", batch_size)
    rows = max(1, round(batch_size * grad_accum / per_row))
    accum = math.ceil(rows / (2 * batch_size))  # 1 while the rows fit twice the batch
    batch = math.ceil(rows / accum)
    return PackingChoice(True, accum, per_row, f"{per_row:.1f} examples per packed row; {batch} rows x "
                         f"{accum} per step keeps ~{batch_size * grad_accum} examples per step", batch)
