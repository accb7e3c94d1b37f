"""Several answers decoded together on one llama.cpp context: one llama_decode per step carries the next token
of every unfinished sequence.

llama-cpp-python's Llama runs one sequence per context (n_seq_max 1), so this builds a second context on the
same loaded weights with room for every sequence (one unified KV buffer: see decode_together for the
measurement), sets the adapter in use on it, and
drives llama.cpp's batch API directly. Written here because llama-cpp-python (0.3.36) has no batched
generation of its own.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

_BATCH = 512  # prompt tokens per llama_decode while the prompts are read


def decode_together(llm, adapter_handle, prompts: Sequence[Sequence[int]], samplers: Sequence,
                    max_tokens: int, push: Callable[[int, int], bool]) -> None:
    """Generate for every prompt until push(i, token) returns True for it or it has max_tokens tokens.

    ``llm`` is a loaded llama_cpp.Llama (its weights and threads are used, its own context is left alone);
    ``adapter_handle`` the LoRA adapter to run with (None: the bare model); ``samplers`` one
    llama_cpp._internals.LlamaSampler per prompt (llama_sampler_sample also accepts the token into it)."""
    import llama_cpp
    from llama_cpp import _internals

    n = len(prompts)
    if n == 0:
        return
    if len(samplers) != n:
        raise ValueError(f"{n} prompts but {len(samplers)} samplers")
    # room for every sequence's prompt and whole answer
    per_seq = -(-(max(len(p) for p in prompts) + max_tokens + 1) // 256) * 256
    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_ctx = per_seq * n
    params.n_batch = params.n_ubatch = max(_BATCH, n)
    params.n_seq_max = n
    # One KV buffer for all streams. Per-stream buffers (kv_unified off) make llama.cpp put only consecutive
    # sequence ids in one ubatch, so once an answer ends early a step takes several passes: measured with the
    # CPU default's f16 base + a trained adapter, 8 probes, one ending early, unified 19.2-23.7 s against
    # 25.7-30.8 s, answers of the same lengths (the texts differ in places: the two layouts do not sum
    # attention in the same order) (bench/results/probe_kv_layout.json); with no early end, on the q4_k_m
    # GGUF, per-stream was ahead (88-89 against 71-80 tokens/s).
    params.kv_unified = True
    params.embeddings = False
    ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    batch = None
    try:
        batch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=1, verbose=False)
        if adapter_handle is not None:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter_handle)
            rc = llama_cpp.llama_set_adapters_lora(ctx.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
            if rc != 0:
                raise RuntimeError(f"llama.cpp refused to set the adapter (code {rc})")
        pos = [len(p) for p in prompts]
        pending: dict[int, int] = {}  # sequence -> its next token, sampled and not yet decoded

        def sample(i: int, idx: int) -> None:
            tok = samplers[i].sample(ctx, idx)
            if not push(i, tok):
                pending[i] = tok

        # read the prompts, _BATCH tokens at a time; a sequence samples its first token right after the decode
        # that holds its last prompt token (the next decode overwrites the logits)
        flat = [(i, j, t) for i, p in enumerate(prompts) for j, t in enumerate(p)]
        for start in range(0, len(flat), params.n_batch):
            chunk = flat[start:start + params.n_batch]
            last = {}
            for k, (i, j, t) in enumerate(chunk):
                _put(batch.batch, k, t, j, i, j == len(prompts[i]) - 1)
                if j == len(prompts[i]) - 1:
                    last[i] = k
            batch.batch.n_tokens = len(chunk)
            ctx.decode(batch)
            for i, k in last.items():
                sample(i, k)
        produced = [1] * n
        while pending:
            order = sorted(pending)
            for k, i in enumerate(order):
                _put(batch.batch, k, pending[i], pos[i], i, True)
                pos[i] += 1
            batch.batch.n_tokens = len(order)
            pending.clear()
            ctx.decode(batch)
            for k, i in enumerate(order):
                if produced[i] >= max_tokens:  # push() ends at the limit itself; this bounds a push that does not
                    continue
                produced[i] += 1
                sample(i, k)
    finally:
        if batch is not None:
            batch.close()
        ctx.close()


def _put(batch, k: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[k] = token
    batch.pos[k] = pos
    batch.n_seq_id[k] = 1
    batch.seq_id[k][0] = seq
    batch.logits[k] = logits
