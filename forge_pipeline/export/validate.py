"""What must hold before a GGUF counts as ready: it loads with its chat template, answers sensibly, and
its perplexity matches the merged HF model's. Measurements here; the pass/fail rules are pure functions."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

PARITY_TOLERANCE = {"f16": 1.01, "q8_0": 1.02, "q5_k_m": 1.05, "q4_k_m": 1.10}
MAX_EVAL_TOKENS = 256


# ---- pure rules ---------------------------------------------------------------------------------------

def degeneracy(text: str) -> str | None:
    """Why an answer is degenerate (empty or looping), or None when it reads like text."""
    if not text or not text.strip():
        return "empty answer"
    from forge_pipeline.evaluation.metrics import word_loop

    if reason := word_loop(text):
        return reason
    if re.search(r"(.)\1{19,}", text):
        return "one character repeated 20+ times"
    return None


def parity_ok(gguf_ppl: float, hf_ppl: float, quant: str, tolerances: dict | None = None) -> tuple[bool, float, float]:
    tol = (tolerances or PARITY_TOLERANCE).get(quant, 1.10)
    ratio = gguf_ppl / hf_ppl if hf_ppl > 0 else math.inf
    return ratio <= tol, ratio, tol


def load_problems(validation: dict) -> list[str]:
    if not validation.get("loads"):
        return [f"llama-cpp-python cannot load the GGUF: {validation.get('load_error')}"]
    return [] if validation.get("has_chat_template") else ["the GGUF carries no tokenizer.chat_template"]


def degenerate_problems(validation: dict) -> list[str]:
    answers = validation.get("answers") or []
    if not answers:
        return ["no eval answers were generated"]
    return [f"answer {i + 1}: {why}" for i, why in enumerate(validation.get("degenerate") or []) if why]


# validation["parity_by"] when an export left fidelity to the nightly evaluation (export_model(parity=False)):
# model_evaluation's KLD against the trained model gates the deploy instead
PARITY_BY_EVALUATION = "model_evaluation (fidelity KLD)"


def parity_problems(validation: dict) -> list[str]:
    if validation.get("parity_by") == PARITY_BY_EVALUATION:
        return []
    if "perplexity_ratio" not in validation:
        return ["perplexity parity was not measured (no eval examples)"]
    if validation["parity_ok"]:
        return []
    return [f"GGUF perplexity {validation['gguf_perplexity']} is {validation['perplexity_ratio']}x the merged model's "
            f"{validation['hf_perplexity']} (tolerance {validation['parity_tolerance']}x)"]


def adapter_problems(eval_loss: float | None, base_eval_loss: float | None) -> list[str]:
    if eval_loss is None or base_eval_loss is None:
        return ["eval loss of the adapter or of the base model is missing"]
    return [] if eval_loss < base_eval_loss else [f"adapter eval loss {eval_loss:.4f} does not beat the base's {base_eval_loss:.4f}"]


# ---- measurements -------------------------------------------------------------------------------------

def eval_sequences(tokenizer_dir: Path, rows: list[dict], limit: int = 16) -> list[tuple[list[int], int]]:
    """(token ids of the whole conversation, index where the assistant answer starts) per eval example,
    tokenized once with the training tokenizer and template so HF and GGUF score the same tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    seqs = []
    for row in rows[:limit]:
        msgs = row["messages"]
        prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
        if hasattr(prompt, "input_ids"):
            prompt, full = prompt.input_ids, full.input_ids
        prompt, full = list(prompt), list(full)
        if full[:len(prompt)] != prompt or len(full) <= len(prompt):
            continue
        seqs.append((full[:MAX_EVAL_TOKENS], len(prompt)))
    return [s for s in seqs if s[1] < len(s[0])]


def _nll(logits: np.ndarray, ids: list[int], start: int) -> tuple[float, int]:
    """Summed negative log-likelihood of ids[start:] given the logits of the positions before them."""
    logits = logits.astype(np.float64)
    pred = logits[start - 1:len(ids) - 1]
    targets = np.asarray(ids[start:])
    m = pred.max(axis=-1, keepdims=True)
    logz = (m[:, 0] + np.log(np.exp(pred - m).sum(axis=-1)))
    return float((logz - pred[np.arange(len(targets)), targets]).sum()), len(targets)


def hf_perplexity(model_dir: Path, seqs: list[tuple[list[int], int]], adapter_dir: Path | None = None) -> float:
    """Perplexity of the HF model at ``model_dir`` (with the PEFT adapter at ``adapter_dir`` applied, unmerged,
    when given: the reference for an adapter GGUF without writing a merged copy)."""
    import torch

    from forge_pipeline.export.merge import load_base

    model = load_base(str(model_dir), "float32", tokenizer_dir=adapter_dir)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    device = next(model.parameters()).device
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for ids, start in seqs:
            logits = model(torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()
            s, k = _nll(logits, ids, start)
            total, n = total + s, n + k
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return math.exp(total / max(n, 1))


def open_llama(gguf_path: Path, lora: Path | None = None, **kwargs):
    """llama_cpp.Llama with the LoRA adapter GGUF ``lora`` applied; raises ValueError when llama.cpp refuses
    the adapter. llama-cpp-python 0.3.36 does not: llama_adapter_lora_init's restype is a ctypes pointer, so
    a refused adapter comes back as a NULL pointer object, never None, its `is None` check passes, and the
    model silently runs without the adapter (seen here with an adapter of the wrong hidden size: llama.cpp
    logs "tensor ... has incorrect shape", Llama() returns normally)."""
    import llama_cpp
    from llama_cpp import Llama

    from serving.llama_log import quiet_native_logs

    quiet_native_logs()
    # Every layer on the GPU when llama.cpp was built with one (an 8B q4_k_m evaluated on the CPU takes
    # minutes); a CPU build reports no offload and keeps 0.
    kwargs.setdefault("n_gpu_layers", -1 if llama_cpp.llama_supports_gpu_offload() else 0)
    llm = Llama(str(gguf_path), verbose=False, lora_path=str(lora) if lora else None, **kwargs)
    if lora and not llm._lora_adapter:
        llm.close()
        raise ValueError(f"llama.cpp refused the LoRA adapter {Path(lora).name} for {Path(gguf_path).name} "
                         f"(wrong base model or shapes)")
    return llm


def gguf_perplexity(gguf_path: Path, seqs: list[tuple[list[int], int]], n_threads: int | None = None,
                    lora: Path | None = None) -> float:
    llm = open_llama(gguf_path, lora, n_ctx=MAX_EVAL_TOKENS + 8, logits_all=True, n_threads=n_threads)
    total, n = 0.0, 0
    try:
        for ids, start in seqs:
            llm.reset()
            llm.eval(ids)
            s, k = _nll(np.array(llm.scores[:len(ids)]), ids, start)
            total, n = total + s, n + k
    finally:
        llm.close()
    return math.exp(total / max(n, 1))


def inspect_and_answer(gguf_path: Path, prompts: list[list[dict]], max_tokens: int = 48,
                       lora: Path | None = None) -> dict:
    """Load the GGUF (with the LoRA adapter GGUF ``lora`` applied, as serving does) in llama-cpp-python, read
    its chat template, and answer the prompts greedily."""
    try:
        llm = open_llama(gguf_path, lora, n_ctx=1024)
    except Exception as e:  # noqa: BLE001 - any load failure is the finding
        return {"loads": False, "error": str(e), "chat_template": None, "answers": []}
    from serving.worker import close_answer_sampler

    try:
        template = llm.metadata.get("tokenizer.chat_template")
        answers = []
        for msgs in prompts:
            out = llm.create_chat_completion(messages=msgs, temperature=0.0, max_tokens=max_tokens, seed=0)
            close_answer_sampler(llm)  # each completion's native sampler, freed now (serving/worker.py says why)
            answers.append(out["choices"][0]["message"]["content"] or "")
        return {"loads": True, "chat_template": template, "answers": answers,
                "architecture": llm.metadata.get("general.architecture")}
    finally:
        llm.close()
