"""GPU evidence for export: train a few steps on the random Llama-3.1-8B-architecture model with the
unsloth backend, then merge (16-bit) + GGUF convert + q4_k_m quantize + validate through the project's own
export_model, recording the times. Prints one JSON line.
    python -m bench.gpu.export_8b MODEL_DIR WORK_DIR

llama-cpp-python must be built there with the system compiler: the image's CXX (/opt/gcc/bin/g++) links
libstdc++ statically into every llama.cpp library, their copies clash, and every full model load dies with
SIGSEGV in llama_model::print_info (vocab-only loads survive):
    CC=/usr/bin/gcc CXX=/usr/bin/g++ CMAKE_ARGS="-DGGML_NATIVE=off" python3 -m pip install --no-deps \
        --no-build-isolation --target /tmp/site .device/llama_cpp_python.tar.gz
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# A pretrained Llama 3.1 8B base (not the Instruct GPU default) has its own template with turn tokens it never
# trained; BENCH_TURN_TOKENS=0 gives the plain-text template of the runs before session 9 instead.
LLAMA3_TURN_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
TURN_TOKENS = os.environ.get("BENCH_TURN_TOKENS", "1") == "1"


def use_sentencepiece_tokenizer(model_dir: Path) -> None:
    """The random model ships a home-made BPE tokenizer, which llama.cpp's converter refuses (it knows BPE
    pre-tokenizers by hash); a SentencePiece model with the config's special ids goes through. Its 360 pieces
    cover few of the 128,256 embedding rows: the converter pads the rest from tokenizer.model, which
    merge_only carries into the merged directory for that reason."""
    import sentencepiece as spm

    if (model_dir / "tokenizer.model").exists():
        return
    text = model_dir / "spm_corpus.txt"
    words = "I think I realize looking back on this decision the team today learned rest work".split()
    text.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(2000)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(model_dir / "tokenizer"), vocab_size=360, minloglevel=2,
                                   model_type="bpe", bos_id=0, eos_id=1, pad_id=2, unk_id=3, byte_fallback=True,
                                   bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>", unk_piece="<unk>",
                                   control_symbols=list(LLAMA3_TURN_TOKENS) if TURN_TOKENS else [])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.vocab"):
        (model_dir / name).unlink(missing_ok=True)
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    from transformers import AutoTokenizer

    # convert once (slow with 128k pieces); every later load reads tokenizer.json
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if TURN_TOKENS:
        from forge_pipeline.training.chat_template import LLAMA3_CHAT_TEMPLATE

        tok.chat_template = LLAMA3_CHAT_TEMPLATE  # Llama 3.1's base ships the instruct template as its own
    tok.save_pretrained(str(model_dir))


def zero_turn_rows(model_dir: Path) -> dict:
    """What Llama 3.1 8B's base has and a random model lacks: its chat tokens' embedding rows at zero (unsloth
    issues #915/#929), and output rows that were never trained (zeroed here too). Written in place into the
    safetensors files (header offsets, bf16 rows), so the seeding of such a base (training/turn_tokens.py,
    export/turn_rows.py) runs on the device as it would on the real base."""
    import numpy as np
    from transformers import AutoTokenizer

    if not TURN_TOKENS:
        return {}
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [tok.convert_tokens_to_ids(t) for t in LLAMA3_TURN_TOKENS]
    index = model_dir / "model.safetensors.index.json"
    files = (json.loads(index.read_text())["weight_map"] if index.exists()
             else {n: "model.safetensors" for n in ("model.embed_tokens.weight", "lm_head.weight")})
    done = {}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        path = model_dir / files[name]
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        meta = header[name]
        assert meta["dtype"] == "BF16", meta
        a, b = meta["data_offsets"]
        w = np.memmap(path, dtype=np.uint16, mode="r+", offset=8 + n + a, shape=tuple(meta["shape"]))
        w[rows] = 0
        w.flush()
        done[name] = rows
    return done


def main() -> None:
    import unsloth  # noqa: F401

    from bench.gpu.train_shape import make_data
    from forge_pipeline.export.pipeline import export_model
    from forge_pipeline.training.config import TrainingConfig
    from forge_pipeline.training.trainer import run_training

    model_dir, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    use_sentencepiece_tokenizer(Path(model_dir))
    make_data(work / "train.jsonl", model_dir, 16, (100, 200))
    make_data(work / "eval.jsonl", model_dir, 4, (60, 120), seed=1)
    t = time.time()
    cfg = TrainingConfig(base_model=model_dir, backend="unsloth", max_steps=3, batch_size=4, gradient_accumulation_steps=1,
                         max_seq_length=256, min_examples=1, save_steps=10_000, logging_steps=1)
    report = run_training(work / "train.jsonl", work / "training", cfg, eval_path=work / "eval.jsonl", home=work,
                          log=lambda m: print(m, file=sys.stderr))
    train_s = time.time() - t
    import torch

    torch.cuda.empty_cache()
    t = time.time()
    exp = export_model(report.final_dir, work / "models", quant="q4_k_m", eval_path=work / "eval.jsonl", merged=True,
                       log=lambda m: print(m, file=sys.stderr))
    v = {k: v for k, v in exp.validation.items() if k != "chat_template"}
    print(json.dumps({"mode": "forge-export-8b", "train_s": round(train_s, 1), "export_total_s": round(time.time() - t, 1),
                      "timings": exp.timings, "gguf_size_mb": exp.size_mb, "quantization": exp.quantization,
                      "sha256": exp.sha256, "validation": v, "backend": report.backend}), flush=True)


if __name__ == "__main__":
    main()
