"""Which chat template a fine-tune is trained with (and so served with), and where a turn ends.

The template is saved with the adapter and written into the GGUF, so serving formats prompts exactly as
training did. Choice, in order:

1. the base tokenizer's own template (instruct models ship one);
2. the model family's own turn tokens when the base vocabulary has them (a base model such as the embedded
   Gemma 3 270M has no template but does have ``<start_of_turn>``/``<end_of_turn>``): the end-of-turn token
   is then part of every trained completion, and llama.cpp marks it as an end-of-generation token, so the
   model learns to stop and serving stops there;
3. a plain-text default (``### User:`` / ``### Assistant:``) that works with any vocabulary and ends each
   answer with the EOS token.

Measured on the sample vault before this module (CPU default, 24 steps, plain-text template): 4 of 16
probe answers looped or invented ``### User:`` / ``### Manager:`` turns — a 270M model does not learn to
emit EOS after plain-text markers in 24 steps, while a single dedicated turn token is learned early —
once that token's embedding is a trained one: a pretrained base's turn tokens may never have been trained
(turn_tokens.py seeds them when the base is converted).
"""
from __future__ import annotations

from dataclasses import dataclass

# Used when the base has no template and no known turn tokens. The template renders bos_token itself
# because chat-templated text is tokenized without added special tokens (by TRL in training and by llama.cpp
# in serving), and ends each assistant turn with eos_token, which is what stops generation.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

# Gemma's turn format (as in Gemma's instruct template: no system role, so a system message is put at the
# start of the first user turn; the assistant role is called "model"). Contents are not trimmed, so the
# trained completion is exactly the example's text followed by <end_of_turn>.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(prefix='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.prefix = ns.prefix + message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ ns.prefix }}{{ message['content'] }}<end_of_turn>\n"
    "{% set ns.prefix = '' %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class TurnFormat:
    name: str
    template: str
    turn_tokens: tuple[str, ...]  # must all be single tokens of the vocabulary
    stops: tuple[str, ...]  # text that ends an answer (end of turn first, then the start of another turn)


TURN_FORMATS = (
    TurnFormat("gemma", GEMMA_CHAT_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"), ("<end_of_turn>", "<start_of_turn>")),
    TurnFormat("chatml", CHATML_CHAT_TEMPLATE, ("<|im_start|>", "<|im_end|>"), ("<|im_end|>", "<|im_start|>")),
    TurnFormat("llama3", LLAMA3_CHAT_TEMPLATE, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               ("<|eot_id|>", "<|start_header_id|>")),
)
PLAIN_TEXT_STOPS = ("### User:", "### System:", "### Assistant:")


def _vocab(tokenizer) -> dict:
    try:
        return tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return {}


def turn_format_for(tokenizer) -> TurnFormat | None:
    """The first known family whose turn tokens are all in the tokenizer's vocabulary."""
    vocab = _vocab(tokenizer)
    for fmt in TURN_FORMATS:
        if all(t in vocab for t in fmt.turn_tokens):
            return fmt
    return None


def choose_chat_template(tokenizer) -> str:
    """The template to train (and serve) with: the base's own, else its family's turn tokens, else plain text."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own.strip():
        return own
    fmt = turn_format_for(tokenizer)
    return fmt.template if fmt else DEFAULT_CHAT_TEMPLATE


def _sentencepiece_adds_dummy_prefix(tokenizer) -> bool:
    """Whether the tokenizer.model that llama.cpp's converter reads adds a dummy prefix (llama.cpp's
    tokenizer.ggml.add_space_prefix follows it)."""
    from pathlib import Path

    candidates = [tokenizer.init_kwargs.get("vocab_file"), Path(str(tokenizer.name_or_path)) / "tokenizer.model"]
    model = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if model is None:
        return False
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    ids = sp.encode("x")
    return bool(ids) and sp.id_to_piece(ids[0]).startswith("\u2581")


def _space_after_special_tokens_as_llama_cpp(tokenizer) -> None:
    """A SentencePiece tokenizer with a dummy prefix (Llama 2, Mistral, TinyLlama; the H100 bench's
    home-made one): llama.cpp prefixes every text fragment that follows a special token with its space
    ("<s>###" -> <s> ▁ # ...), Hugging Face's (legacy=False: Metaspace prepend_scheme "first") only the
    start of the whole text, so a template that renders <s> or </s> before text trained on other ids than
    serving feeds (the round trip failed on every conversation, test_chat_template.py). Prepending to every
    segment between special tokens ("always") is llama.cpp's rule; it is saved in tokenizer.json."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None or type(pre).__name__ != "Metaspace" or getattr(pre, "prepend_scheme", None) != "first":
        return
    if not _sentencepiece_adds_dummy_prefix(tokenizer):  # e.g. Gemma's: llama.cpp adds no space either
        return
    from tokenizers.pre_tokenizers import Metaspace

    backend.pre_tokenizer = Metaspace(replacement=pre.replacement, prepend_scheme="always", split=pre.split)
    # transformers 5.17's LlamaTokenizer rebuilds its pre-tokenizer from `legacy` when loaded (legacy=True
    # -> "always"), so the saved config must say so too
    if hasattr(tokenizer, "legacy"):
        tokenizer.legacy = True
        tokenizer.init_kwargs["legacy"] = True


def prepare_tokenizer(tokenizer) -> str:
    """Set the chosen template on ``tokenizer`` and register its turn tokens as special tokens, so each
    tokenizes as one token in training whatever the tokenizer's own type for it (a SentencePiece
    tokenizer maps plain text to control pieces only when they are registered). llama.cpp's side comes from
    the token types in tokenizer.model: Gemma's marks its turn tokens as control tokens, the converter
    keeps that, and llama.cpp then parses them in a chat prompt and ends generation at <end_of_turn>
    (test_chat_template.py checks both through the real converter; the evaluation's template round trip
    checks every candidate). The tokens already exist in the vocabulary, so no embedding rows are added.
    Returns the template.
    """
    template = choose_chat_template(tokenizer)
    tokenizer.chat_template = template
    _space_after_special_tokens_as_llama_cpp(tokenizer)
    vocab = _vocab(tokenizer)
    wanted = [t for fmt in TURN_FORMATS for t in fmt.turn_tokens if t in template and t in vocab]
    if wanted:
        size = len(tokenizer)
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in wanted], special_tokens=True)
        assert len(tokenizer) == size, "turn tokens already in the vocabulary must not grow it"
    return template


def stop_sequences(template: str) -> list[str]:
    """Text that ends an answer under ``template``: its end-of-turn marker, then the start of any other turn.

    Serving passes these as ``stop`` so that a model which writes past its turn is cut where the turn
    should have ended. (llama.cpp also stops by itself at end-of-generation tokens: EOS, and the turn
    tokens it recognises such as Gemma's <end_of_turn>.)"""
    for fmt in TURN_FORMATS:
        if fmt.turn_tokens[-1] in template or fmt.stops[0] in template:
            return list(fmt.stops)
    found = [s for s in PLAIN_TEXT_STOPS if s in template]
    return found or list(PLAIN_TEXT_STOPS)
