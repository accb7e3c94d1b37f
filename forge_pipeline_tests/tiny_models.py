"""Tiny real models for tests: a Llama of the real architecture with random weights and a real
SentencePiece tokenizer trained here (llama.cpp's converter refuses home-made BPE tokenizers)."""
from __future__ import annotations

import json
from pathlib import Path

WORDS = ("I think I realize looking back the team learned rest work today decision running notes week "
         "reflection meeting guitar book quiet morning evening lesson change better").split()


def make_tokenizer(out: Path, pieces: int = 400) -> None:
    import sentencepiece as spm

    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(14)) for i in range(3000)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=pieces,
                                   model_type="bpe", bos_id=1, eos_id=2, pad_id=0, unk_id=3, byte_fallback=True,
                                   bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>", unk_piece="<unk>",
                                   minloglevel=2)
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))


def make_tiny_llama(out: Path, seed: int = 0, vocab_size: int = 400, pieces: int = 400) -> Path:
    """vocab_size above the tokenizer's ``pieces`` gives a padded embedding, as many released models have."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer(out, pieces)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def make_tiny_gguf(out_file: Path, seed: int = 0, work: Path | None = None) -> Path:
    from forge_pipeline.export.gguf import convert_to_gguf

    hf = make_tiny_llama((work or out_file.parent) / f"tiny-hf-{seed}", seed)
    return convert_to_gguf(hf, out_file, "f16")
