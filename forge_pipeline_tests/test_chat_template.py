"""The chat template a fine-tune is trained and served with, and where its turns end."""
from __future__ import annotations

from pathlib import Path

import pytest

from forge_pipeline.training.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    GEMMA_CHAT_TEMPLATE,
    choose_chat_template,
    prepare_tokenizer,
    stop_sequences,
)
from forge_pipeline_tests.helpers import make_gemma_tokenizer, make_tiny_gemma

CONVERSATION = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "How was my week?"},
                {"role": "assistant", "content": "I think the team learned to rest."}]


def make_tokenizer(out: Path, turn_tokens: bool) -> Path:
    return make_gemma_tokenizer(out, turn_tokens)


def load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_own_template_wins(tmp_path):
    tok = load(make_tokenizer(tmp_path / "t", turn_tokens=True))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert choose_chat_template(tok) == "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def test_family_turn_tokens_when_the_vocabulary_has_them(tmp_path):
    tok = load(make_tokenizer(tmp_path / "t", turn_tokens=True))
    assert not tok.chat_template
    assert choose_chat_template(tok) == GEMMA_CHAT_TEMPLATE
    prepare_tokenizer(tok)
    vocab = tok.get_vocab()
    prompt = tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    # Gemma has no system role: the system text opens the first user turn; the answer's turn is "model"
    assert prompt == "<s><start_of_turn>user\nYou are kind.\n\nHow was my week?<end_of_turn>\n<start_of_turn>model\n"
    # the end-of-turn token is one token, inside the trained completion (after the prompt)
    prompt_ids = tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(full[:len(prompt_ids)]) == list(prompt_ids)
    assert vocab["<end_of_turn>"] in list(full[len(prompt_ids):])
    assert tok("<start_of_turn>", add_special_tokens=False)["input_ids"] == [vocab["<start_of_turn>"]]


def test_plain_text_default_without_turn_tokens(tmp_path):
    tok = load(make_tokenizer(tmp_path / "t", turn_tokens=False))
    assert choose_chat_template(tok) == DEFAULT_CHAT_TEMPLATE
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert "### Assistant:\nI think the team learned to rest.</s>" in text


def test_stop_sequences_follow_the_template():
    assert stop_sequences(GEMMA_CHAT_TEMPLATE) == ["<end_of_turn>", "<start_of_turn>"]
    assert stop_sequences(DEFAULT_CHAT_TEMPLATE) == ["### User:", "### System:", "### Assistant:"]
    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    assert stop_sequences(chatml) == ["<|im_end|>", "<|im_start|>"]


@pytest.mark.slow
def test_gguf_from_the_real_converter_stops_at_end_of_turn(tmp_path):
    """Through llama.cpp's converter: the template is embedded, llama.cpp parses the prompt into the same
    tokens as training, and <end_of_turn> is an end-of-generation token (so serving stops there)."""
    import llama_cpp
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from forge_pipeline.export.gguf import convert_to_gguf

    hf = make_tiny_gemma(tmp_path / "hf")
    tok = load(hf)
    tok.chat_template = prepare_tokenizer(tok)
    tok.save_pretrained(str(hf))
    gguf = convert_to_gguf(hf, tmp_path / "m.gguf", "f16")
    llm = Llama(str(gguf), n_ctx=256, verbose=False)
    try:
        template = llm.metadata["tokenizer.chat_template"]
        assert template == GEMMA_CHAT_TEMPLATE
        eot = tok.get_vocab()["<end_of_turn>"]
        assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, eot)
        rendered = Jinja2ChatFormatter(template, "</s>", "<s>")(messages=CONVERSATION[:-1]).prompt
        served = llm.tokenize(rendered.encode(), add_bos=False, special=True)
        trained = tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
        assert served == list(trained)
    finally:
        llm.close()


@pytest.mark.slow
def test_a_sentencepiece_tokenizer_with_a_dummy_prefix_round_trips_through_llama_cpp(tmp_path):
    """The H100 bench's Llama 3.1 with a home-made SentencePiece tokenizer failed the round trip on every
    conversation ("[339, 39, 39] vs [39, 39, 39]" at position 1): llama.cpp's SentencePiece tokenizer puts
    its dummy-prefix space after every special token (<s>, </s>), Hugging Face's (legacy=False) only at the
    very start of the text. Checked through the real converter and llama.cpp, multi-turn (after </s> too)."""
    from forge_pipeline.evaluation.served import LoadedModel, ServedModel
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    hf = make_tiny_llama(tmp_path / "llama")
    tok = load(hf)
    prepare_tokenizer(tok)
    tok.save_pretrained(str(hf))  # what training publishes, and what the converter embeds
    tok = load(hf)  # the saved form is the one training and evaluation use
    gguf = convert_to_gguf(hf, tmp_path / "llama.gguf", "f16")
    msgs = CONVERSATION + [{"role": "user", "content": "And the week before?"}]
    trained = list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False))
    with LoadedModel(ServedModel(gguf), 512) as m:
        served = m.template_prompt_ids(msgs)
    assert served == trained, (tok.convert_ids_to_tokens(served[:6]), tok.convert_ids_to_tokens(trained[:6]))
