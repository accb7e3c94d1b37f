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
