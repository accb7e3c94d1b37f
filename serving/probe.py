"""Loads a GGUF (optionally with a LoRA adapter GGUF on it) in a process of its own and reports what it can
do: a file that crashes llama.cpp takes down this probe, never the server or the export that asked.

    probe_gguf(path, lora=None, prompts=[], max_tokens=48, seqs=[], n_ctx=256, timeout_s=180) -> dict

Always: load, generate 4 greedy tokens from "Hello", read the chat template and architecture. `prompts`
(lists of chat messages) are answered greedily; `seqs` ([token ids, start]) give the perplexity of
ids[start:]. Result keys: ok, error, tokens, chat_template, architecture, answers, perplexity.
Child entry point: python -m serving.probe < REQUEST.json  (one JSON line on stdout)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Optional


def probe_gguf(path: Path, *, lora: Optional[Path] = None, prompts: list = (), max_tokens: int = 48,
               seqs: list = (), n_ctx: int = 256, timeout_s: float = 180) -> dict:
    """Never raises for a bad model: {"ok": False, "error": "..."} instead."""
    request = {"path": str(path), "lora": str(lora) if lora else None, "prompts": list(prompts),
               "max_tokens": max_tokens, "seqs": [list(s) for s in seqs], "n_ctx": n_ctx}
    try:
        proc = subprocess.run([sys.executable, "-m", "serving.probe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the model did not load and generate within {timeout_s:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
    detail = json.loads(lines[-1]).get("error", "") if lines else ""
    if not detail:  # llama.cpp says why on stderr (e.g. "tensor 'blk.0...' has incorrect shape")
        errs = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "failed" in ln.lower()]
        detail = (errs or proc.stderr.strip().splitlines() or [""])[-1][:300]
    what = "this adapter" if lora else "this file"
    return {"ok": False, "error": f"llama.cpp {how} loading {what}" + (f": {detail}" if detail else "")}


def _nll(logits, ids: list[int], start: int) -> tuple[float, int]:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    pred = logits[start - 1:len(ids) - 1]
    targets = np.asarray(ids[start:])
    m = pred.max(axis=-1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(pred - m).sum(axis=-1))
    return float((logz - pred[np.arange(len(targets)), targets]).sum()), len(targets)


def _apply_lora(llm, path: str) -> None:
    import ctypes

    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(llm.model, path.encode())
    if not handle:
        raise ValueError("llama.cpp refused the adapter (wrong base, wrong tensor shapes or a damaged file)")
    arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, arr, 1, (ctypes.c_float * 1)(1.0)) != 0:
        raise ValueError("llama.cpp could not set the adapter on a context")


def _run(req: dict) -> dict:
    from llama_cpp import Llama

    seqs = [(list(ids), int(start)) for ids, start in req["seqs"]]
    n_ctx = max([req["n_ctx"], *(len(ids) + 8 for ids, _ in seqs)])
    llm = Llama(req["path"], n_ctx=n_ctx, logits_all=bool(seqs), verbose=False)
    try:
        if req.get("lora"):
            _apply_lora(llm, req["lora"])  # mmap stays on for the base, unlike Llama(lora_path=...)
        out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
        answers = []
        for msgs in req["prompts"]:
            a = llm.create_chat_completion(messages=msgs, temperature=0.0, max_tokens=req["max_tokens"], seed=0)
            answers.append(a["choices"][0]["message"]["content"] or "")
        perplexity = None
        if seqs:
            total, n = 0.0, 0
            for ids, start in seqs:
                llm.reset()
                llm.eval(ids)
                s, k = _nll(llm.scores[:len(ids)], ids, start)
                total, n = total + s, n + k
            perplexity = math.exp(total / max(n, 1))
        return {"ok": True, "error": None, "tokens": out["usage"]["completion_tokens"],
                "chat_template": llm.metadata.get("tokenizer.chat_template"),
                "architecture": llm.metadata.get("general.architecture"), "answers": answers,
                "perplexity": perplexity}
    finally:
        llm.close()


def main() -> int:
    try:
        result = _run(json.loads(sys.stdin.read()))
    except Exception as e:  # noqa: BLE001 - reported to the parent as a clean failure
        print(json.dumps({"ok": False, "error": str(e)[:300]}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
