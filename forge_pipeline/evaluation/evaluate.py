"""evaluate_models: base, live and candidate, each as served (llama.cpp), on today's eval split.

One model at a time: candidate, then base, then live. When they run on one base GGUF (adapters on a resident
base, the default), that GGUF is loaded once and the adapters are switched on its context, as serving does;
a merged GGUF is loaded on its own. The fidelity reference is the trainer's reference logits when it wrote
them for these conversations (reference_logits.py), else the trained model loaded in Hugging Face form beside
the candidate. Probe answers are cached by model identity, probe set, sampling and template, and eval losses
by model identity and each conversation's token ids, so the live model's answers (made the night it was the
candidate) and the base's loss and answers are not computed again.
"""
from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from forge_pipeline.evaluation import metrics
from forge_pipeline.evaluation.probes import GENERAL_TEXT
from forge_pipeline.evaluation.reference import ReferenceModel, neutral_prompt_sequences, training_sequences
from forge_pipeline.evaluation.report import (
    DataChanges,
    EvaluationReport,
    Fidelity,
    ModelResult,
    ProbeResult,
    RoundTrip,
)
from forge_pipeline.evaluation.served import (
    LoadedModel,
    OneModelAtATime,
    Sampling,
    ServedModel,
    file_identity,
    gguf_quantization,
)
from forge_pipeline.files import atomic_write_json, read_jsonl, sha256_file, sha256_text

EXAMPLES = "examples.json"  # per evaluation folder: example id -> source note, for "what changed since live"


def model_identity(model: ServedModel, cache_dir: Path | None) -> str:
    cache = Path(cache_dir) / "file_sha256.json" if cache_dir else None
    ident = file_identity(model.gguf, cache)
    return ident + (":" + file_identity(model.lora, cache) if model.lora else "")


def candidate_key(identity: str) -> str:
    return sha256_text(identity)[:16]


def _probe(model: LoadedModel, prompts: list[str], sampling: Sampling, identity: str, cache_dir: Path | None,
           train_corpus: str) -> tuple[list[ProbeResult], bool]:
    # "together": answers decoded in one batch (answer_many; seeds per prompt), not comparable token for token
    # with answers cached one at a time
    key = sha256_text(json.dumps([identity, prompts, sampling.as_dict(), model.used_template, "together"],
                                 sort_keys=True))
    cache = Path(cache_dir) / "probe_cache" / f"{key}.json" if cache_dir else None
    if cache is not None and cache.exists():
        return [ProbeResult.model_validate(p) for p in json.loads(cache.read_text())], True
    out = []
    for a in model.answer_many(prompts, sampling, give_up=metrics.loop_reason):  # a loop is flagged, not finished
        out.append(ProbeResult(prompt=a.prompt, text=a.text, finish_reason=a.finish_reason,
                               completion_tokens=a.completion_tokens, loop=metrics.loop_reason(a.text),
                               invented_turn=metrics.invented_turn(a.text), empty=not a.text.strip(),
                               cut=a.finish_reason == "length",
                               copied_chars=metrics.longest_copied_run(a.text, train_corpus)))
    if cache is not None:
        atomic_write_json(cache, [p.model_dump() for p in out])
    return out, False


class _LossCache:
    """Each eval conversation's summed NLL and token count under one model, by (model identity, the
    conversation's token ids), in evaluation/loss_cache/. The candidate's come with its fidelity pass, so the
    next night, when it is the live model, its loss costs nothing."""

    def __init__(self, cache_dir: Path | None, identity: str):
        self.path = Path(cache_dir) / "loss_cache" / f"{sha256_text(identity)[:32]}.json" if cache_dir else None
        self.known: dict[str, list] = {}
        if self.path is not None and self.path.exists():
            try:
                self.known = json.loads(self.path.read_text())
            except ValueError:  # a damaged cache is a cache miss, never a failure
                self.known = {}
        self._added = False

    def put(self, key: str, nll: np.ndarray) -> None:
        self.known[key] = [float(nll.sum()), len(nll)]
        self._added = True

    def save(self) -> None:
        if self.path is not None and self._added:
            atomic_write_json(self.path, self.known)


class _Laps:
    """Successive intervals into ``timings`` under ``prefix``: lap("x_s") records the time since the last lap."""

    def __init__(self, timings: dict[str, float], prefix: str):
        self.timings, self.prefix, self.t = timings, prefix, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[self.prefix + name] = now - self.t
        self.t = now


def _scores(model: LoadedModel, seqs: list[tuple[list[int], int] | None], cache: _LossCache) -> list[tuple[float, int] | None]:
    """Each conversation's (summed NLL, answer tokens) under ``model``, from ``cache`` where known (a None
    sequence stays None); the caller saves the cache."""
    from forge_pipeline.evaluation.reference_logits import sequence_key

    out: list[tuple[float, int] | None] = []
    for seq in seqs:
        if seq is None:
            out.append(None)
            continue
        ids, start = seq
        key = sequence_key(ids, start)
        if key not in cache.known:
            cache.put(key, metrics.token_nll(model.logits(ids, start - 1), ids, start, rows_from=start - 1))
        out.append((float(cache.known[key][0]), int(cache.known[key][1])))
    return out


def _loss(model: LoadedModel, seqs: list[tuple[list[int], int]], cache: _LossCache) -> tuple[float | None, int, bool]:
    """Token-weighted eval loss of ``model`` on ``seqs``; the third value says every conversation came from
    the cache. Cached per conversation (_LossCache), so when tonight's eval split adds a few conversations (the
    vault grew) only those are scored: a whole-split key made the H100 nightly score the base's 50
    conversations again for 5 new ones (7.0 s of its 31 s evaluation)."""
    before = len(cache.known)
    scores = _scores(model, seqs, cache)
    cache.save()
    total, n = sum(s for s, _ in scores), sum(k for _, k in scores)
    return (total / n if n else None), n, len(cache.known) == before


def _prompt_gains(model: LoadedModel, seqs, neutral, cache: _LossCache) -> list[float]:
    """metrics.prompt_gains of ``model``: its own-prompt losses (in ``cache`` from the loss or fidelity pass)
    against the neutral prompt's, cached the same way, so the live model's cost nothing the night after it was
    the candidate and the base's are scored once."""
    gains = metrics.prompt_gains(_scores(model, seqs, cache), _scores(model, neutral, cache))
    cache.save()
    return gains


def _fidelity(cand: LoadedModel, seqs, ref: ReferenceModel, sparse,
              losses: _LossCache) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Per-position KLD and top-1 agreement of the served candidate against the trained model, and the
    candidate's summed NLL and token count from the same logits (each conversation's also put in ``losses``)."""
    from forge_pipeline.evaluation.reference_logits import sequence_key

    kls, agree, total, n = [], [], 0.0, 0
    if sparse is None:
        ref.load()
    try:
        for ids, start in seqs:
            served = cand.logits(ids, start - 1)[:-1]  # rows start-1 .. len-2: the answer positions
            key = sequence_key(ids, start)
            if sparse is not None:
                kl, ag, nll = metrics.sparse_kl_top1_nll(*sparse.rows[key], served, ids[start:])
            else:
                kl, ag = metrics.kl_and_top1(ref.logits(ids)[start - 1:len(ids) - 1], served)
                nll = metrics.token_nll(served, ids, start, rows_from=start - 1)
            kls.append(kl)
            agree.append(ag)
            losses.put(key, nll)
            total, n = total + float(nll.sum()), n + len(nll)
    finally:
        if sparse is None:
            ref.close()
            gc.collect()
    losses.save()
    return np.concatenate(kls), np.concatenate(agree), total, n


def _other_vocabulary(model: LoadedModel, candidate_vocab: tuple[int, str] | None) -> str | None:
    """Why ``model`` cannot be scored on the candidate's token ids (another vocabulary), or None. None too
    when it runs on the candidate's own GGUF (candidate_vocab None: same file, same vocabulary)."""
    if candidate_vocab is None:
        return None
    n, digest = candidate_vocab
    if model.n_vocab != n:
        return f"its vocabulary differs from the candidate's ({model.n_vocab} vs {n} tokens)"
    if model.vocabulary_sha256() != digest:
        return f"its vocabulary differs from the candidate's (same size, {n} tokens, but other tokens)"
    return None


def _round_trip(model: LoadedModel, tok, rows: list[dict], seqs_full: list[tuple[list[int], int]]) -> RoundTrip:
    problems, mismatched = [], []
    if not model.template:
        return RoundTrip(ok=False, problems=["the GGUF carries no chat template"])
    for i, row in enumerate(rows):
        served = model.template_prompt_ids(row["messages"][:-1])
        trained = list(tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                               return_dict=False))
        if served != trained:
            mismatched.append(i)
            if len(mismatched) == 1:
                k = next((j for j, (a, b) in enumerate(zip(served, trained)) if a != b), min(len(served), len(trained)))
                problems.append(f"eval conversation {i + 1}: prompt tokens differ from position {k} "
                                f"(GGUF template {served[k:k + 3]} vs training template {trained[k:k + 3]})")
    if mismatched:
        problems[0] += f" ({len(mismatched)} of {len(rows)} conversations differ)"
    special = set(tok.all_special_ids)
    eot_id = None
    for ids, start in seqs_full:
        eot_id = next((t for t in ids[start:] if t in special), None)
        if eot_id is not None:
            break
    eot_tok, is_eog = None, False
    if eot_id is None:
        problems.append("the trained answers end with no special token, so nothing but a stop string ends a turn")
    else:
        eot_tok = tok.convert_ids_to_tokens(eot_id)
        is_eog = model.is_eog(eot_id)
        if not is_eog:
            problems.append(f"the trained end-of-turn token {eot_tok!r} (id {eot_id}) does not end generation in llama.cpp")
    return RoundTrip(ok=not problems, conversations=len(rows), mismatched=mismatched, end_of_turn_token=eot_tok,
                     end_of_turn_id=eot_id, end_of_turn_is_eog=is_eog, problems=problems)


def _loss_curve(adapter_dir: Path) -> list[tuple[int, float]]:
    from forge_pipeline.training.manifest import AdapterManifest

    manifest = AdapterManifest.read_if_exists(adapter_dir)
    if manifest is None:
        return []
    curve = [(0, float(manifest.base_eval_loss))] if manifest.base_eval_loss else []
    curve += [(int(h["step"]), float(h["eval_loss"])) for h in manifest.log_history
              if "eval_loss" in h and "step" in h]
    return sorted(dict(curve).items())


def _data_changes(cache_dir: Path | None, live_identity: str | None, examples: dict[str, str]) -> DataChanges | None:
    if not cache_dir or not live_identity:
        return None
    path = Path(cache_dir) / candidate_key(live_identity) / EXAMPLES
    if not path.exists():
        return None
    before: dict[str, str] = json.loads(path.read_text())
    notes_before, notes_now = set(before.values()), set(examples.values())
    added = [i for i in examples if i not in before]
    removed = [i for i in before if i not in examples]
    # An example whose id (a content hash) is new but whose note already had examples was edited.
    return DataChanges(against=live_identity, new=sum(examples[i] not in notes_before for i in added),
                       edited=sum(examples[i] in notes_before for i in added),
                       dropped=sum(before[i] not in notes_now for i in removed),
                       unchanged=len(set(examples) & set(before)))


def evaluate_models(candidate: ServedModel, base: ServedModel, *, adapter_dir: Path, eval_path: Path,
                    train_path: Path | None = None, live: ServedModel | None = None, probes: list[str] | None = None,
                    sampling: Sampling | None = None, max_examples: int = 32, cache_dir: Path | None = None,
                    n_threads: int | None = None, log: Callable[[str], None] = print) -> EvaluationReport:
    """Evaluate the candidate (and base, and live when there is one) as served, on ``eval_path``.

    ``adapter_dir`` is the candidate's trained adapter (training/final): its tokenizer and template define
    the eval tokens, and base + adapter in Hugging Face form is the reference for the fidelity KLD.
    ``cache_dir`` (settings.evaluation_dir) keeps probe answers and file hashes between nights."""
    from forge_pipeline.evaluation.probes import DEFAULT_PROBES

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    sampling = sampling or Sampling.from_serving()
    prompts = list(probes or DEFAULT_PROBES)
    adapter_dir = Path(adapter_dir)
    from forge_pipeline.training.manifest import AdapterManifest

    manifest = AdapterManifest.read_if_exists(adapter_dir)
    max_len = int((manifest.hyperparameters.get("max_seq_length") if manifest else None) or 1024)
    rows = read_jsonl(eval_path)[:max_examples]
    if not rows:
        raise ValueError(f"{eval_path}: no eval examples to evaluate on")
    train_rows = read_jsonl(train_path) if train_path and Path(train_path).exists() else []
    train_texts = [r["messages"][-1]["content"] for r in train_rows]
    train_corpus = "\n\x00\n".join(train_texts)

    ref = ReferenceModel(adapter_dir)
    tok = ref.tokenizer
    seqs = training_sequences(tok, rows, max_len)
    neutral = neutral_prompt_sequences(tok, rows, max_len)
    general = [list(tok(t, add_special_tokens=True)["input_ids"])[:max_len] for t in GENERAL_TEXT]
    n_ctx = max(max_len, 512) + sampling.max_tokens + 16
    idents = {"candidate": model_identity(candidate, cache_dir), "base": model_identity(base, cache_dir)}
    if live is not None:
        idents["live"] = model_identity(live, cache_dir)
    timings["prepare_s"] = time.perf_counter() - t_start

    results: dict[str, ModelResult] = {}
    models = OneModelAtATime(n_ctx, n_threads)
    try:
        t = time.perf_counter()
        lap = _Laps(timings, "candidate_")  # the parts of candidate_loss_fidelity_s
        cand = models.get(candidate)
        lap("load_s")
        round_trip = _round_trip(cand, tok, rows, seqs)
        from forge_pipeline.evaluation.reference_logits import load_reference_logits

        sparse, why = load_reference_logits(adapter_dir, tok, seqs, cand.n_vocab, max_len)
        if sparse is None:
            log(f"fidelity against the trained model loaded again ({why})")
        lap("round_trip_reference_s")
        # one cache per model identity: two roles may be one model (a re-export of the live adapter)
        caches = {ident: _LossCache(cache_dir, ident) for ident in set(idents.values())}
        losses = {role: caches[ident] for role, ident in idents.items()}
        kl_all, agree_all, total, n = _fidelity(cand, seqs, ref, sparse, losses["candidate"])
        lap("scoring_s")
        quant = gguf_quantization(candidate.gguf)
        fidelity = Fidelity(kld_mean=float(kl_all.mean()), kld_p99=float(np.quantile(kl_all, 0.99)),
                            top1_agreement=float(agree_all.mean()), positions=int(len(kl_all)), quantization=quant,
                            reference=f"trainer-top{sparse.top_k}" if sparse is not None else "hf")
        results["candidate"] = ModelResult(role="candidate", gguf=str(candidate.gguf),
                                           lora=str(candidate.lora) if candidate.lora else None,
                                           identity=idents["candidate"], eval_loss=total / n if n else None, eval_tokens=n)
        results["candidate"].prompt_gains = _prompt_gains(cand, seqs, neutral, losses["candidate"])
        lap("prompt_gain_s")
        cand_general = [cand.logits(ids)[:-1] for ids in general]  # for the drift KLD against the base
        cand_template = cand.used_template
        cand_vocab = (cand.n_vocab, cand.vocabulary_sha256()) if live is not None and not cand.shares_base(live) else None
        lap("general_s")
        timings["candidate_loss_fidelity_s"] = time.perf_counter() - t
        log(f"candidate: eval loss {results['candidate'].eval_loss:.4f}, KLD {fidelity.kld_mean:.5f} ({quant}, "
            f"reference {fidelity.reference})")

        t = time.perf_counter()
        c_probes, c_cached = _probe(cand, prompts, sampling, idents["candidate"], cache_dir, train_corpus)
        results["candidate"].probes, results["candidate"].probes_cached = c_probes, c_cached
        timings["candidate_probes_s"] = time.perf_counter() - t

        t = time.perf_counter()
        b = models.get(base, fallback_template=cand_template)
        b_loss, b_n, b_loss_cached = _loss(b, seqs, losses["base"])
        drift = [metrics.kl_and_top1(b.logits(ids)[:-1], c)[0] for ids, c in zip(general, cand_general)]
        del cand_general
        b_probes, b_cached = _probe(b, prompts, sampling, idents["base"], cache_dir, train_corpus)
        results["base"] = ModelResult(role="base", gguf=str(base.gguf), lora=str(base.lora) if base.lora else None,
                                      identity=idents["base"], eval_loss=b_loss, eval_tokens=b_n, probes=b_probes,
                                      probes_cached=b_cached, loss_cached=b_loss_cached)
        results["base"].prompt_gains = _prompt_gains(b, seqs, neutral, losses["base"])
        results["candidate"].drift_kld = float(np.concatenate(drift).mean())
        timings["base_s"] = time.perf_counter() - t

        if live is not None:
            t = time.perf_counter()
            lv = models.get(live, fallback_template=cand_template)
            not_scored = _other_vocabulary(lv, cand_vocab)
            if not_scored:  # e.g. the person switched base model: the candidate's ids mean other tokens there
                log(f"live: not scored on eval loss, {not_scored}")
                l_loss, l_n, l_loss_cached = None, 0, False
            else:
                l_loss, l_n, l_loss_cached = _loss(lv, seqs, losses["live"])
            l_probes, l_cached = _probe(lv, prompts, sampling, idents["live"], cache_dir, train_corpus)
            results["live"] = ModelResult(role="live", gguf=str(live.gguf), lora=str(live.lora) if live.lora else None,
                                          identity=idents["live"], eval_loss=l_loss, eval_tokens=l_n,
                                          not_scored=not_scored, probes=l_probes, probes_cached=l_cached,
                                          loss_cached=l_loss_cached,
                                          prompt_gains=None if not_scored else _prompt_gains(lv, seqs, neutral,
                                                                                             losses["live"]))
            timings["live_s"] = time.perf_counter() - t
    finally:
        models.close()
    timings["model_loads"] = models.loads

    held_out = [r["messages"][-1]["content"] for r in rows]
    for res in results.values():
        answers = [p.text for p in res.probes]
        runs = [p.copied_chars for p in res.probes]
        res.regurgitation_max_chars = max(runs, default=0)
        res.regurgitation_share = sum(r >= metrics.COPY_CHARS for r in runs) / len(runs) if runs else 0.0
        res.style_similarity = metrics.style_similarity(answers, held_out)

    key = candidate_key(idents["candidate"])
    examples = {r["id"]: r.get("source_file", "") for r in train_rows + rows if "id" in r}
    if cache_dir:
        atomic_write_json(Path(cache_dir) / key / EXAMPLES, examples)
    timings["total_s"] = time.perf_counter() - t_start
    return EvaluationReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), candidate_key=key, eval_examples=len(rows),
        eval_tokens=n, eval_sha256=sha256_file(eval_path), max_seq_length=max_len, sampling=sampling.as_dict(),
        probe_prompts=prompts, models=results, fidelity=fidelity, round_trip=round_trip,
        loss_curve=_loss_curve(adapter_dir), data_changes=_data_changes(cache_dir, idents.get("live"), examples),
        timings={k: round(v, 2) for k, v in timings.items()})
