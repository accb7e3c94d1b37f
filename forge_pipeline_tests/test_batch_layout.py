"""Batch layout choice and token counting, on TRL's real collator."""
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from forge_pipeline.training.batch_layout import TokenCountingCollator, choose_padding_free, padding_waste

EXAMPLES = [{"input_ids": list(range(5, 5 + n))} for n in (3, 7, 2)]


def test_counts_real_tokens_padded_and_padding_free():
    for padding_free in (False, True):
        counter = TokenCountingCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free))
        batch = counter(EXAMPLES)
        counter(EXAMPLES[:1])
        assert counter.batches == [12, 3] and counter.tokens_through(1) == 12 and counter.tokens_through(5) == 15
        assert batch["input_ids"].numel() == (21 if not padding_free else 12)  # 3 rows of 7, or one row of 12
    assert counter.padding_free is True  # attributes reach the wrapped collator, both ways
    counter.pad_token_id = 9
    assert counter.inner.pad_token_id == 9


def test_padding_waste_and_choice():
    assert padding_waste([512] * 50, batch_size=4, max_length=512) == 0.0
    assert padding_waste([600, 900], batch_size=4, max_length=512) == 0.0  # truncation makes rows equal
    mixed = [100, 400] * 50
    assert 0.3 < padding_waste(mixed, batch_size=4, max_length=2048) < 0.45
    assert choose_padding_free([512] * 50, 4, 512) == (False, 0.0)
    assert choose_padding_free(mixed, 4, 2048)[0] is True


def test_reflection_length_data_is_packed_on_the_fast_gpu_path_at_equal_effective_batch():
    import random

    from forge_pipeline.training.batch_layout import choose_packing

    rng = random.Random(0)
    reflections = [rng.randint(100, 400) for _ in range(500)]  # the nightly's shape (issue 14)
    gpu = choose_packing(reflections, batch_size=4, grad_accum=4, max_length=1024, fast_packed_attention=True)
    assert gpu.packing and 3.5 < gpu.examples_per_row < 4.5
    # examples per optimizer step stay close to the unpacked 4 x 4 = 16, so the step count stays comparable
    per_step = gpu.batch_size * gpu.gradient_accumulation_steps * gpu.examples_per_row
    assert gpu.gradient_accumulation_steps == 1 and 14 <= per_step <= 18
    # the H100 nightly's data (309 tokens per example on average): 5 rows in one micro-batch, ~15.5 examples
    # per step; rounding accumulation alone gave 4 rows (13 examples, 123 steps for the seed's 96)
    nightly = choose_packing([309] * 500, 4, 4, 1024, fast_packed_attention=True)
    assert (nightly.batch_size, nightly.gradient_accumulation_steps) == (5, 1)
    slow = choose_packing(reflections, 4, 4, 1024, fast_packed_attention=False)  # CPU, or per-example SDPA
    assert not slow.packing and slow.gradient_accumulation_steps == 4 and slow.batch_size == 4
    long_docs = choose_packing([700, 900, 1000] * 50, 4, 4, 1024, fast_packed_attention=True)
    assert not long_docs.packing and long_docs.gradient_accumulation_steps == 4
    big_batch = choose_packing([128] * 100, 4, 16, 1024, fast_packed_attention=True)
    assert big_batch.packing and (big_batch.batch_size, big_batch.gradient_accumulation_steps) == (8, 1)  # 64 / 8
    # more rows than twice the configured batch: the fewest accumulated micro-batches of at most twice it
    huge = choose_packing([128] * 100, 4, 32, 1024, fast_packed_attention=True)
    assert (huge.batch_size, huge.gradient_accumulation_steps) == (8, 2)  # 128 examples / 8 per row = 16 rows
    odd = choose_packing([128] * 100, 4, 20, 1024, fast_packed_attention=True)  # 80 examples = 10 rows
    assert (odd.batch_size, odd.gradient_accumulation_steps) == (5, 2)  # round(10 / 4) would give 4 x 2 = 8 rows

def test_layout_follows_the_packing_choice_only_when_packing_is_unset():
    from types import SimpleNamespace

    from forge_pipeline.training.config import resolve_training_config
    from forge_pipeline.training.session import choose_layout

    class Tok:
        def apply_chat_template(self, messages, tokenize=False):
            return " ".join(m["content"] for m in messages)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "w " * 200}]}] * 20
    fast = SimpleNamespace(tokenizer=Tok(), packed_attention="torch varlen flash (enabled by forge)")
    unset = resolve_training_config({}, "cuda")
    layout = choose_layout(unset, "unsloth", fast, rows, cuda=True)
    assert layout.packing and layout.description == "packed (bfd)" and layout.gradient_accumulation_steps == 1
    assert layout.batch_size == 3  # 16 examples of ~201 tokens, 5.1 to a 1024-token row
    assert 5.0 < layout.examples_per_row < 5.2  # an epoch (the save and eval interval) is 20 / 5.1 rows
    by_hand = choose_layout(resolve_training_config({"packing": True}, "cuda"), "unsloth", fast, rows, cuda=True)
    assert by_hand.packing and by_hand.batch_size == 4 and 5.0 < by_hand.examples_per_row < 5.2
    off = choose_layout(resolve_training_config({"packing": False}, "cuda"), "unsloth", fast, rows, cuda=True)
    assert not off.packing and off.gradient_accumulation_steps == 4
    cpu = choose_layout(resolve_training_config({}, "cpu"), "transformers", fast, rows, cuda=False)
    assert not cpu.packing and cpu.description == "padded"


def test_oom_backoff_keeps_at_least_the_rows_of_a_step():
    """A packed layout's odd micro-batches: halving 5 x 1 with // gave 2 x 2, 4 rows instead of 5."""
    from forge_pipeline.training.session import run_with_oom_backoff

    tried = []

    def run(batch, accum):
        tried.append((batch, accum))
        if batch > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert run_with_oom_backoff(run, 5, 1, log=lambda m: None) == "ok"
    assert tried == [(5, 1), (3, 2), (2, 3), (1, 6)]
    assert all(b * a >= 5 for b, a in tried)


def test_oom_first_puts_layers_back_to_recomputing_then_halves():
    """Layers that keep their activations (checkpoint_skip_layers) are the first thing an OOM gives back: the
    retry keeps the batch; only an OOM with nothing left to give back halves it."""
    from forge_pipeline.training.session import run_with_oom_backoff

    tried, kept, logs = [], {"layers": 12}, []

    def relieve():
        changed, kept["layers"] = kept["layers"], 0
        return changed

    def run(batch, accum):
        tried.append((batch, accum, kept["layers"]))
        if kept["layers"] or batch > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert run_with_oom_backoff(run, 4, 1, log=logs.append, relieve=relieve) == "ok"
    assert tried == [(4, 1, 12), (4, 1, 0), (2, 2, 0)]
    assert "12 layers keeping their activations" in logs[0] and "batch_size=4" in logs[0]
    assert "batch_size=2" in logs[1]
