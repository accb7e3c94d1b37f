"""Give a base's untrained turn tokens a trained token's embedding, so a LoRA fine-tune can learn to end a turn.

A pretrained (not instruct) base has its family's turn tokens in the vocabulary but never saw them in
training: their embedding rows stay where initialisation put them, among thousands of other unused rows.
Measured on the embedded Gemma 3 270M: ``<end_of_turn>`` has 4,664 rows within cosine 0.99 of its own
(``<pad>``, ``<unusedN>``, byte tokens...), ``<eos>``, ``<bos>`` and ``<start_of_turn>`` none. The output
layer is tied to those rows, so whatever a fine-tune does to the hidden state raises thousands of logits
together with the end-of-turn one, and sampling picks a neighbour: served answers ran to the token limit
with ``slotBox``, ``spacePad``, ``MINUTE``, ``<unused1401>`` where the turn should have ended (0 of 8 probe
answers ended; p(<end_of_turn>) where each eval answer ends 0.0004, rank 35).

The fix copies the row of the base's own EOS into an untrained end-of-turn token (and BOS into an untrained
start-of-turn): the base already predicts EOS where a text ends, so the fine-tune only has to learn that an
answer ends there. Same data, same 48 steps: p(<end_of_turn>) 0.36 (top-1 at every answer end), 8 of 8 probe
answers ended, 26 tokens on average instead of 256, held-out eval loss 4.12 -> 3.83 (measured 2026-12-07 on
the sample vault's curated set with serving's sampling, transformers + peft). llama.cpp stops at EOS too, so
an answer that ends with the (now equal-scoring) EOS also ends cleanly.

Unsloth's ``fix_untrained_tokens`` does the same job for bases whose unused rows are near zero (Llama 3); it
uses the mean of trained rows, which for a tied output layer lies inside the other rows' convex hull and so
can never be the most likely token — and Gemma's unused rows are not near zero, they are near each other.
"""
from __future__ import annotations

from forge_pipeline.training.chat_template import turn_format_for

# A row with this many other rows within NEAR_COSINE of it is one of the untrained cluster: the embedded
# Gemma's <end_of_turn> has 4,664 and <pad> 5,836, while its trained rows (<eos>, <bos>, <start_of_turn>,
# ordinary words) have none.
NEAR_COSINE = 0.99
UNTRAINED_MIN_NEIGHBOURS = 64
# A row this much shorter than the median row is zero for our purposes (a trained row is of the median's order).
ZERO_ROW = 1e-4


def near_rows(weight, row: int, cosine: float = NEAR_COSINE) -> int:
    """How many other rows of ``weight`` (vocab x hidden) lie within ``cosine`` of row ``row``."""
    import torch

    w = weight.detach().float()
    v = w[row]
    sims = (w @ v) / (w.norm(dim=1) * v.norm()).clamp_min(torch.finfo(torch.float32).tiny)
    return int((sims > cosine).sum()) - 1


def is_untrained(weight, row: int) -> bool:
    """Never moved by pretraining: one of a cluster of near-identical rows (Gemma's unused rows), or all zeros
    (Llama 3's base leaves its chat tokens at zero: unsloth issues #915 and #929, torchtune #2429), which no
    cosine can see."""
    w = weight.detach().float()  # once: near_rows' own .float() is then no copy (an 8B's rows: 2 GB in float32)
    norms = w.norm(dim=1)
    if float(norms[row]) <= ZERO_ROW * float(norms.median()):
        return True
    return near_rows(w, row) >= UNTRAINED_MIN_NEIGHBOURS


def seed_untrained_turn_tokens(model, tokenizer) -> dict[str, str]:
    """Copy EOS's embedding (and output row, when untied) into an untrained end-of-turn token, BOS's into an
    untrained start-of-turn token, for the turn format the chat template will use (chat_template.py).

    In place; returns {token: the token it was seeded from}, empty when the base has its own template, no
    known turn tokens, or turn tokens that are trained already (instruct models)."""
    import torch

    own = getattr(tokenizer, "chat_template", None)
    fmt = None if isinstance(own, str) and own.strip() else turn_format_for(tokenizer)
    if fmt is None:
        return {}
    sources = {fmt.stops[0]: tokenizer.eos_token, fmt.turn_tokens[0]: tokenizer.bos_token}
    vocab = tokenizer.get_vocab()
    embed = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    untied = out is not None and out.weight.data_ptr() != embed.data_ptr()
    seeded = {}
    with torch.no_grad():
        for token, source in sources.items():
            if token not in vocab or source not in vocab or not is_untrained(embed, vocab[token]):
                continue
            embed[vocab[token]] = embed[vocab[source]]
            if untied:
                out.weight[vocab[token]] = out.weight[vocab[source]]
            seeded[token] = source
    return seeded


def untrained_end_of_turn(model, tokenizer) -> str | None:
    """The end-of-turn token of the template ``tokenizer`` trains with (the base's own, or the family template
    chat_template.prepare_tokenizer gave it), when its row is untrained: for a base forge does not convert
    itself (a local or hub directory is the user's, never rewritten), training goes on and says so, since the
    answers will likely not end. A base's own template counts too: Llama 3.1's base ships the instruct
    template, whose <|eot_id|> the base never trained."""
    from forge_pipeline.training.chat_template import stop_sequences

    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template.strip():
        return None
    token = stop_sequences(template)[0]
    token_id = tokenizer.get_vocab().get(token)
    if token_id is None:  # a plain-text stop such as "### User:", not a token of its own
        return None
    return token if is_untrained(model.get_input_embeddings().weight, token_id) else None
