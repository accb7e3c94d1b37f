"""The fidelity reference written by the trainer, in-process, from the model it just trained.

Loading the trained model again for the fidelity KLD was most of the 8B evaluation on the H100 (104 of 177 s:
the bnb-4bit base loaded in bf16 and dequantized). The trainer already holds that model at the end of
training, so it writes, for each eval conversation at the answer positions, the top-k log-probabilities (and
their token ids) and the log of the remaining tail mass, beside the adapter (``reference_logits.npz``). The
evaluation scores the served file against this sparse distribution (metrics.sparse_kl_top1_nll: KL over the
top k + one tail bucket, a lower bound of the full KL) and falls back to loading the Hugging Face reference
when the file is missing or does not match (other adapter weights, tokenizer, template or eval tokens).

Each conversation is keyed by the sha256 of its token ids and answer start, so an evaluation of the first N
conversations of the same split, or a split that only grew, still finds its rows.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forge_pipeline.files import read_jsonl, sha256_file, sha256_text
from forge_pipeline.training.errors import is_out_of_memory

FILE = "reference_logits.npz"
FORMAT = 1
TOP_K = 256  # 256 x (4 + 8) bytes per answer token: ~38 MB for 50 conversations of 250 answer tokens; the
# KL bound tightens as k grows (metrics.sparse_kl_top1_nll; test_evaluation_speed measures it)
MAX_ROWS = 256  # conversations written (the evaluation scores the first evaluation_max_examples, 32 by default)


def sequence_key(ids: list[int], start: int) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes() + str(start).encode()).hexdigest()[:32]


def tokenizer_identity(tokenizer) -> str:
    """The vocabulary (token -> id) and the chat template: what turns an eval conversation into token ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return sha256_text(json.dumps([vocab, tokenizer.chat_template or ""], ensure_ascii=False))


@dataclass
class SparseReference:
    """Per conversation key: (top-k token ids [P, k], their log-probs [P, k], log tail mass [P])."""

    rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    top_k: int


def _batch_bytes(device) -> int:
    """How many bytes of float32 logits one forward may return: each conversation was its own forward, 134 ms
    apiece for the 8B on the H100 (6.7 s for 50, bench/results/gpu_nightly_h100.json), mostly per-call cost.
    On CUDA at most 2 GiB and a quarter of the free memory (a 12-24 GB card after training has less to spare)."""
    if getattr(device, "type", "cpu") != "cuda":
        return 256 * 2**20
    try:
        import torch

        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - unknown: the cap alone
        return 2 * 2**30
    return max(64 * 2**20, min(2 * 2**30, free // 4))


def _batches(seqs: list[tuple[list[int], int]], max_tokens: int):
    """Consecutive groups whose padded size (rows x longest row) stays within max_tokens (one row at least)."""
    group: list[tuple[list[int], int]] = []
    for item in seqs:
        if group and (len(group) + 1) * max(len(item[0]), *(len(g[0]) for g in group)) > max_tokens:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def write_reference_logits(model, tokenizer, adapter_dir: Path, eval_path: Path, max_seq_length: int,
                           top_k: int = TOP_K, max_rows: int = MAX_ROWS, batch_bytes: int | None = None) -> Path | None:
    """Write adapter_dir/reference_logits.npz from ``model`` (a PEFT model in memory, any device); None when
    there is no eval split. The adapter must already be published in ``adapter_dir`` (its weights' sha256 is
    recorded, so a later adapter never pairs with this file). Conversations go through the model together,
    right-padded, as many as ``batch_bytes`` of float32 logits allow (default: 2 GiB on CUDA, 256 MiB on a
    CPU); 1 byte gives one conversation per forward."""
    import torch

    from forge_pipeline.evaluation.reference import training_sequences

    if eval_path is None or not Path(eval_path).exists():
        return None
    rows = read_jsonl(eval_path)[:max_rows]
    seqs = training_sequences(tokenizer, rows, max_seq_length)
    if not seqs:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    keys, offsets, ids_out, lp_out, tail_out, n = [], [0], [], [], [], 0
    old_env = os.environ.get("UNSLOTH_RETURN_LOGITS")
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"  # unsloth leaves logits empty during training unless asked
    vocab = int(getattr(model.config, "vocab_size", 0) or 0) or 262_144
    def forward(group):
        """(rows, logits) of the right-padded group, one forward; out of memory, each half on its own (a single
        row's error stands). A generator, so one part's logits are let go before the next part runs."""
        # right-padded rows: a causal model's logits at a real position never see the padding
        width = max(len(ids) for ids, _ in group)
        batch = torch.zeros((len(group), width), dtype=torch.long, device=device)
        mask = torch.zeros_like(batch)
        for i, (ids, _) in enumerate(group):
            batch[i, :len(ids)] = torch.tensor(ids, device=device)
            mask[i, :len(ids)] = 1
        try:
            logits = model(input_ids=batch, attention_mask=mask).logits
        except (RuntimeError, MemoryError) as e:
            if len(group) == 1 or not (isinstance(e, MemoryError) or is_out_of_memory(e)):
                raise
            logits = None
        del batch, mask
        if logits is not None:
            yield group, logits
            return
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(group) // 2
        yield from forward(group[:half])
        yield from forward(group[half:])

    try:
        with torch.no_grad():
            for whole in _batches(seqs, max(1, (batch_bytes or _batch_bytes(device)) // (4 * vocab))):
                for group, all_logits in forward(whole):
                    for i, (ids, start) in enumerate(group):
                        logits = all_logits[i, start - 1:len(ids) - 1]
                        if logits.shape[0] != len(ids) - start or logits.ndim != 2:
                            raise RuntimeError(f"the model returned logits of shape {tuple(all_logits.shape)}")
                        n = logits.shape[-1]
                        # float64 from the model's own float32 logits, as the full reference is computed: float32
                        # log-probs would carry ~1e-7 errors, above the ~1e-8 KLD of an f16 export (measured)
                        lp = torch.log_softmax(logits.float().double(), dim=-1)
                        top = torch.topk(lp, min(top_k, n), dim=-1)  # sorted: column 0 is the argmax
                        rest = lp.scatter(-1, top.indices, float("-inf"))
                        keys.append(sequence_key(ids, start))
                        ids_out.append(top.indices.int().cpu().numpy())
                        lp_out.append(top.values.cpu().numpy())
                        tail_out.append(torch.logsumexp(rest, dim=-1).cpu().numpy())
                        offsets.append(offsets[-1] + logits.shape[0])
                    del all_logits
    finally:
        if old_env is None:
            os.environ.pop("UNSLOTH_RETURN_LOGITS", None)
        else:
            os.environ["UNSLOTH_RETURN_LOGITS"] = old_env
        model.train(was_training)
    adapter_dir = Path(adapter_dir)
    meta = {"format": FORMAT, "top_k": min(top_k, n), "vocab": n, "max_seq_length": max_seq_length,
            "eval_sha256": sha256_file(eval_path), "tokenizer": tokenizer_identity(tokenizer),
            "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors")}
    out = adapter_dir / FILE
    tmp = adapter_dir / (FILE + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), keys=np.array(keys), offsets=np.array(offsets, dtype=np.int64),
             ids=np.concatenate(ids_out), logp=np.concatenate(lp_out), tail=np.concatenate(tail_out))
    os.replace(tmp, out)
    return out


def load_reference_logits(adapter_dir: Path, tokenizer, seqs: list[tuple[list[int], int]], n_vocab: int,
                          max_seq_length: int) -> tuple[SparseReference | None, str]:
    """The trainer's reference for exactly these sequences, or (None, why not)."""
    path = Path(adapter_dir) / FILE
    if not path.exists():
        return None, "the trainer wrote no reference logits"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            keys, offsets = list(z["keys"]), z["offsets"]
            ids, logp, tail = z["ids"], z["logp"], z["tail"]
    except (OSError, ValueError, KeyError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__})"
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if meta.get("format") != FORMAT:
        return None, f"{path.name} has format {meta.get('format')}, not {FORMAT}"
    if not weights.exists() or meta.get("adapter_sha256") != sha256_file(weights):
        return None, f"{path.name} was written for other adapter weights"
    if meta.get("tokenizer") != tokenizer_identity(tokenizer):
        return None, f"{path.name} was written with another tokenizer or chat template"
    if meta.get("max_seq_length") != max_seq_length or meta.get("vocab") != n_vocab:
        return None, f"{path.name} was written for another max_seq_length or vocabulary size"
    index = {k: i for i, k in enumerate(keys)}
    rows = {}
    for s, start in seqs:
        k = sequence_key(s, start)
        if k not in index:
            return None, f"{path.name} lacks some of today's eval conversations (the eval split changed)"
        i = index[k]
        a, b = int(offsets[i]), int(offsets[i + 1])
        rows[k] = (ids[a:b], logp[a:b], tail[a:b])
    return SparseReference(rows, int(meta["top_k"])), "ok"


def write_after_training(model, tokenizer, final_dir: Path, eval_path: Path | None, max_seq_length: int,
                         log=print) -> None:
    """The trainer's call: never fails the training (the evaluation then loads the reference itself)."""
    import time

    t = time.perf_counter()
    try:
        out = write_reference_logits(model, tokenizer, final_dir, eval_path, max_seq_length)
    except Exception as e:  # noqa: BLE001 - an optional speed-up; the evaluation falls back and says so
        log(f"reference logits for the evaluation not written ({type(e).__name__}: {str(e)[:200]}); "
            f"the evaluation will load the trained model itself")
        return
    if out is not None:
        log(f"reference logits for the evaluation written in {time.perf_counter() - t:.1f} s")
