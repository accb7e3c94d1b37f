"""The evaluation's speed-ups keep its numbers: the trainer's sparse reference logits against the full
Hugging Face reference, adapters switched on one loaded base against a model loaded with its adapter, the
cached base loss, and probes that stop once they loop. Real tiny Gemma models through llama.cpp."""
from __future__ import annotations

import math

import numpy as np
import pytest

from forge_pipeline.evaluation.evaluate import evaluate_models
from forge_pipeline.evaluation.served import LoadedModel, Sampling, ServedModel
from forge_pipeline.files import write_jsonl
from forge_pipeline_tests.helpers import make_tiny_gemma, random_lora_adapter
from forge_pipeline_tests.tiny_models import WORDS

pytestmark = pytest.mark.slow
PROBES = ["the rest week", "the quiet morning week"]
SAMPLING = Sampling(max_tokens=24)


def eval_rows(n: int) -> list[dict]:
    return [{"id": f"e{i}", "messages": [
        {"role": "user", "content": f"the {WORDS[i % len(WORDS)]} {WORDS[(i * 3 + 1) % len(WORDS)]} week"},
        {"role": "assistant", "content": f"I think the {WORDS[(i * 5) % len(WORDS)]} lesson is better looking back"}]}
        for i in range(n)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from forge_pipeline.evaluation.reference_logits import write_reference_logits
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.export.lora_gguf import write_adapter_gguf

    w = tmp_path_factory.mktemp("speed")
    base = make_tiny_gemma(w / "gemma")
    write_jsonl(w / "eval.jsonl", eval_rows(6))
    out = {"w": w, "base_hf": base}
    for name, seed in (("cand", 1), ("live", 2)):
        adapter = w / f"adapter-{name}"
        model, tok = random_lora_adapter(base, adapter, seed=seed, b_scale=0.5)
        write_reference_logits(model, tok, adapter, w / "eval.jsonl", max_seq_length=1024, top_k=64)
        out[name] = adapter
        out[f"{name}_lora"] = write_adapter_gguf(adapter, str(base), w / f"{name}.gguf").path
    # the base GGUF carries the adapters' chat template, as the exported base does
    shadow = w / "shadow"
    import shutil

    shutil.copytree(base, shadow)
    shutil.copy2(w / "adapter-cand" / "chat_template.jinja", shadow / "chat_template.jinja")
    out["base"] = convert_to_gguf(shadow, w / "base.gguf", "f16")
    return out


def run(lab, candidate: ServedModel, adapter, cache: str, live: ServedModel | None = None):
    return evaluate_models(candidate, ServedModel(lab["base"]), adapter_dir=adapter, eval_path=lab["w"] / "eval.jsonl",
                           live=live, probes=PROBES, sampling=SAMPLING, cache_dir=lab["w"] / cache, log=lambda m: None)


def test_sparse_reference_is_a_lower_bound_of_the_full_kl_and_exact_with_the_whole_vocabulary(lab, tmp_path):
    """Served: the bare base; reference: base + the candidate's random adapter, so the KL is real. The
    trainer's top-64 reference against the full one, on the same positions; then top-400 (the whole
    vocabulary, no tail) must give the full KL itself."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_pipeline.evaluation.reference_logits import write_reference_logits

    sparse = run(lab, ServedModel(lab["base"]), lab["cand"], "c1")
    no_file = tmp_path / "adapter"
    shutil.copytree(lab["cand"], no_file)
    (no_file / "reference_logits.npz").unlink()
    full = run(lab, ServedModel(lab["base"]), no_file, "c2")
    assert sparse.fidelity.reference == "trainer-top64" and full.fidelity.reference == "hf"
    s, f = sparse.fidelity.kld_mean, full.fidelity.kld_mean
    assert f > 0.01  # a real difference to measure (0.019 here)
    assert s <= f * (1 + 1e-6), (s, f)  # a lower bound
    assert sparse.fidelity.top1_agreement == full.fidelity.top1_agreement
    assert sparse.fidelity.positions == full.fidelity.positions
    # Measured: 0.0060 vs 0.0186 (32%). A random-weight model's next-token distributions are nearly flat
    # over its 400 tokens, so 64 of them hold little of the mass; a trained model's are peaked.
    print(f"tiny random Gemma, 400-token vocabulary, top 64: sparse KLD {s:.5f} vs full {f:.5f} ({s / f:.0%})")

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(lab["base_hf"]), dtype=torch.float32),
                                      str(no_file))
    write_reference_logits(model, AutoTokenizer.from_pretrained(str(no_file)), no_file, lab["w"] / "eval.jsonl",
                           max_seq_length=1024, top_k=400)
    whole = run(lab, ServedModel(lab["base"]), no_file, "c5")
    assert whole.fidelity.reference == "trainer-top400"
    assert whole.fidelity.kld_mean == pytest.approx(f, rel=1e-4)


def test_a_stale_reference_file_falls_back_to_the_full_reference(lab, tmp_path):
    import shutil

    stale = tmp_path / "adapter"
    shutil.copytree(lab["cand"], stale)
    shutil.copy2(lab["live"] / "reference_logits.npz", stale / "reference_logits.npz")  # another adapter's
    report = run(lab, ServedModel(lab["base"], lab["cand_lora"]), stale, "c3")
    assert report.fidelity.reference == "hf"


def test_adapters_switch_on_one_loaded_base_and_score_as_a_fresh_load(lab):
    from forge_pipeline.evaluation.reference import ReferenceModel, training_sequences
    from forge_pipeline.export.validate import gguf_perplexity
    from forge_pipeline.files import read_jsonl

    cand = ServedModel(lab["base"], lab["cand_lora"])
    live = ServedModel(lab["base"], lab["live_lora"])
    report = run(lab, cand, lab["cand"], "c4", live=live)
    assert report.timings["model_loads"] == 1
    # independent: llama-cpp-python loading each adapter at construction (export's perplexity check)
    seqs = training_sequences(ReferenceModel(lab["cand"]).tokenizer, read_jsonl(lab["w"] / "eval.jsonl"), 1024)
    for role, lora in (("candidate", lab["cand_lora"]), ("live", lab["live_lora"]), ("base", None)):
        expected = math.log(gguf_perplexity(lab["base"], seqs, lora=lora))
        assert report.models[role].eval_loss == pytest.approx(expected, rel=1e-4), role
    assert report.fidelity.kld_mean < 0.005 and report.fidelity.reference == "trainer-top64"
    # the next night: base loss and base/live probes come from the caches
    again = run(lab, cand, lab["cand"], "c4", live=live)
    assert again.base.loss_cached and again.base.probes_cached and again.live.probes_cached
    assert again.base.eval_loss == report.base.eval_loss


def test_a_grown_eval_split_scores_only_its_new_conversations(lab, tmp_path, monkeypatch):
    """The vault grew: tonight's eval split is last night's plus one conversation. The base's loss is scored
    on that one only (each conversation cached by its token ids), and still equals a fresh computation."""
    from forge_pipeline.evaluation import evaluate as ev
    from forge_pipeline.evaluation.reference import ReferenceModel, training_sequences
    from forge_pipeline.export.validate import gguf_perplexity
    from forge_pipeline.files import read_jsonl

    cache = tmp_path / "cache"
    cand = ServedModel(lab["base"], lab["cand_lora"])
    grown = tmp_path / "eval-7.jsonl"
    write_jsonl(grown, eval_rows(7))  # the 6 of lab's eval.jsonl, then one new
    kw = dict(adapter_dir=lab["cand"], probes=PROBES, sampling=SAMPLING, cache_dir=cache, log=lambda m: None)
    evaluate_models(cand, ServedModel(lab["base"]), eval_path=lab["w"] / "eval.jsonl", **kw)
    scored, fidelity = [], []
    real, real_fid = ev.metrics.token_nll, ev.metrics.sparse_kl_top1_nll
    monkeypatch.setattr(ev.metrics, "token_nll", lambda *a, **k: scored.append(1) or real(*a, **k))
    monkeypatch.setattr(ev.metrics, "sparse_kl_top1_nll", lambda *a, **k: fidelity.append(1) or real_fid(*a, **k))
    report = evaluate_models(cand, ServedModel(lab["base"]), eval_path=grown, **kw)
    # the candidate's 7 (its loss comes with the fidelity pass: here the dense one, since the trainer's
    # reference was written for last night's 6 conversations), the base's 1 new conversation, and the new
    # conversation under the neutral prompt (prompt gain) for each of the two
    assert (len(fidelity), len(scored)) == (0, 7 + 1 + 1 + 1), (len(fidelity), len(scored))
    assert not report.base.loss_cached
    seqs = training_sequences(ReferenceModel(lab["cand"]).tokenizer, read_jsonl(grown), 1024)
    assert report.base.eval_loss == pytest.approx(math.log(gguf_perplexity(lab["base"], seqs)), rel=1e-4)


def test_last_night_s_candidate_costs_no_loss_pass_as_tonight_s_live_model(lab, tmp_path):
    """The candidate's per-conversation losses come with its fidelity pass and are cached under its identity,
    so the next night, when it is the live model, its eval loss is read, not computed (equal to last night's)."""
    cand, other = ServedModel(lab["base"], lab["cand_lora"]), ServedModel(lab["base"], lab["live_lora"])
    kw = dict(eval_path=lab["w"] / "eval.jsonl", probes=PROBES, sampling=SAMPLING, cache_dir=tmp_path / "cache",
              log=lambda m: None)
    night1 = evaluate_models(cand, ServedModel(lab["base"]), adapter_dir=lab["cand"], **kw)
    night2 = evaluate_models(other, ServedModel(lab["base"]), adapter_dir=lab["live"], live=cand, **kw)
    assert night2.live.loss_cached and night2.live.probes_cached
    assert night2.live.eval_loss == pytest.approx(night1.candidate.eval_loss, rel=1e-9)


@pytest.mark.parametrize("lora", [None, "cand_lora"])
def test_logits_asked_for_only_where_needed_are_the_rows_eval_computes(lab, lora):
    """LoadedModel.logits decodes with llama.cpp's batch API, asking for rows rows_from.. only; against
    llama-cpp-python's own eval() (every row, kept in ``scores``) on a sequence longer than one batch, with
    rows_from in the first batch, at a batch edge and in the second batch."""
    with LoadedModel(ServedModel(lab["base"], lab[lora] if lora else None), 512) as m:
        ids = [m.llm.token_bos()] + [(7 * k) % 200 + 10 for k in range(m.llm.n_batch + 60)]
        for rows_from in (0, 5, m.llm.n_batch, m.llm.n_batch + 20):
            fast = m.logits(ids, rows_from)
            m.llm.reset()
            m.llm.eval(ids)
            full = np.array(m.llm.scores[rows_from:len(ids)], dtype=np.float32)
            assert fast.shape == full.shape == (len(ids) - rows_from, m.n_vocab)
            np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-4)
        answered = m.answer("the rest week", Sampling(max_tokens=8, temperature=0.0))  # generation still works after
        assert answered.completion_tokens > 0


def test_a_probe_stops_as_soon_as_it_is_given_up(lab):
    with LoadedModel(ServedModel(lab["base"]), 512) as m:
        full = m.answer("the rest week", Sampling(max_tokens=64, temperature=0.0))
        cut = m.answer("the rest week", Sampling(max_tokens=64, temperature=0.0), give_up=lambda t: True,
                       check_every=8)
    assert full.completion_tokens > 8 and full.finish_reason in ("length", "stop")
    assert cut.finish_reason == "gave_up" and cut.completion_tokens == 8
    assert full.text.startswith(cut.text)  # the same answer, stopped early
    assert np.isfinite(full.completion_tokens)


@pytest.mark.parametrize("lora", [None, "cand_lora"])
def test_probes_answered_together_are_the_answers_given_one_at_a_time(lab, lora):
    """answer_many (one batched decode per step, a context of its own) against answer() (llama-cpp-python's
    own generate loop on the model's context), greedy so both must pick the same tokens; with an adapter the
    batch must run it too (the bare base answers otherwise).

    Two comparisons, because a batch's arithmetic is not bit-identical to a batch of one: with the repeat
    penalty on, this random tiny model's near-tied logits made 2 of 4 greedy answers of a batch of 4 part from
    answer()'s after ~13 tokens (seen while writing this test), while every answer of a batch of one matched.
    So: a batch of one with serving's penalty (the same sampler chain), and a batch of four without it."""
    prompts = PROBES + ["the long walk week", "the rest week"]  # a repeated prompt: its own stream, same answer
    penalty, plain = Sampling(max_tokens=32, temperature=0.0), Sampling(max_tokens=32, temperature=0.0, repeat_penalty=1.0)
    with LoadedModel(ServedModel(lab["base"], lab[lora] if lora else None), 512) as m:
        expected = {s.repeat_penalty: [m.answer(p, s) for p in prompts] for s in (penalty, plain)}
        alone = [m.answer_many([p], penalty)[0] for p in prompts]
        together = m.answer_many(prompts, plain)
        m.use(ServedModel(lab["base"]))
        bare = m.answer_many(prompts, plain)

    def key(answers):
        return [(a.text, a.completion_tokens, a.finish_reason) for a in answers]

    assert key(alone) == key(expected[penalty.repeat_penalty])
    assert key(together) == key(expected[plain.repeat_penalty])
    assert all(a.completion_tokens > 0 for a in together)
    assert key(expected[penalty.repeat_penalty]) != key(expected[plain.repeat_penalty])  # the penalty did act
    if lora:
        assert [a.text for a in bare] != [a.text for a in together]


def test_probes_beyond_one_batch_are_answered_in_groups(lab, monkeypatch):
    """A probe file longer than MAX_TOGETHER is decoded in groups (llama.cpp caps a context's sequences); each
    answer is still the one answer() gives (greedy, no penalty: see the test above)."""
    from forge_pipeline.evaluation import served

    monkeypatch.setattr(served, "MAX_TOGETHER", 3)
    plain = Sampling(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    prompts = PROBES + ["the long walk week", "the rest week"]
    with LoadedModel(ServedModel(lab["base"], lab["cand_lora"]), 512) as m:
        expected = [m.answer(p, plain) for p in prompts]
        grouped = m.answer_many(prompts, plain)
    assert [(a.text, a.completion_tokens) for a in grouped] == [(a.text, a.completion_tokens) for a in expected]


def test_probes_answered_together_stop_each_on_its_own(lab):
    """give_up ends one answer while the others go on to their own end; sampled answers are reproducible."""
    sampling = Sampling(max_tokens=40, seed=3)
    prompts = ["the rest week", "the quiet morning week", "the long walk week"]
    with LoadedModel(ServedModel(lab["base"], lab["cand_lora"]), 512) as m:
        a = m.answer_many(prompts, sampling)
        b = m.answer_many(prompts, sampling)
        calls: list[str] = []

        def give_up(text: str) -> bool:  # the first check (answer 1 at 8 tokens) gives up, no later one
            calls.append(text)
            return len(calls) == 1

        c = m.answer_many(prompts, sampling, give_up=give_up, check_every=8)
    assert [x.text for x in a] == [x.text for x in b]
    assert a[0].completion_tokens > 8, "the test needs a first answer longer than the give-up point"
    assert c[0].finish_reason == "gave_up" and c[0].completion_tokens == 8 and a[0].text.startswith(c[0].text)
    assert [x.completion_tokens for x in c[1:]] == [x.completion_tokens for x in a[1:]]


def test_the_trainer_writes_the_reference_logits_the_evaluation_uses(lab, tmp_path):
    import shutil

    from forge_pipeline.export.lora_gguf import write_adapter_gguf
    from forge_pipeline.training.trainer import train

    write_jsonl(tmp_path / "train.jsonl", eval_rows(16))
    final = train(tmp_path / "train.jsonl", tmp_path / "run", base_model=str(lab["base_hf"]), learning_rate=5e-3,
                  max_steps=2, batch_size=4, gradient_accumulation_steps=1, eval_path=lab["w"] / "eval.jsonl",
                  max_seq_length=128, min_examples=4, home=tmp_path / "home", force_cpu=True, eval_steps=2,
                  save_steps=1000, log=lambda m: None)
    assert (final / "reference_logits.npz").exists()
    served = ServedModel(lab["base"], write_adapter_gguf(final, str(lab["base_hf"]), tmp_path / "a.gguf").path)
    sparse = run(lab, served, final, "t1")
    assert sparse.fidelity.reference == "trainer-top256" and sparse.fidelity.kld_mean < 0.005
    copy = tmp_path / "copy"
    shutil.copytree(final, copy)
    (copy / "reference_logits.npz").unlink()
    full = run(lab, served, copy, "t2")
    assert full.fidelity.reference == "hf" and sparse.fidelity.kld_mean <= full.fidelity.kld_mean * (1 + 1e-6)
    assert sparse.fidelity.top1_agreement == full.fidelity.top1_agreement
    assert sparse.candidate.eval_loss == full.candidate.eval_loss


def test_one_pass_fidelity_and_loss_equal_a_float64_numpy_computation():
    """The fidelity pass normalizes each conversation's logits once for the KLD, top-1 and the loss; each
    equals its definition computed with numpy in float64: KL over {top-k tokens, the rest as one bucket},
    argmax agreement, and the NLL of the next token."""
    from forge_pipeline.evaluation import metrics

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (12, 300)).astype(np.float32)
    ref = rng.normal(0, 3, (12, 300))
    ref_lp = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    top = np.argsort(-ref_lp, axis=-1)[:, :16]
    top_lp = np.take_along_axis(ref_lp, top, -1)
    tail = np.log(1 - np.exp(top_lp).sum(-1))
    targets = list(rng.integers(0, 300, 12))
    kl, agree, nll = metrics.sparse_kl_top1_nll(top, top_lp, tail, logits, targets)

    x = logits.astype(np.float64)
    lp = x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
    q_top = np.take_along_axis(lp, top, -1)
    rest = np.ones_like(lp, dtype=bool)
    np.put_along_axis(rest, top, False, -1)
    q_tail = np.log(np.where(rest, np.exp(lp), 0).sum(-1))
    want_kl = (np.exp(top_lp) * (top_lp - q_top)).sum(-1) + np.exp(tail) * (tail - q_tail)
    np.testing.assert_allclose(kl, want_kl, rtol=1e-9)
    assert kl.min() > 0  # a real difference was measured
    assert (agree == (lp.argmax(-1) == top[:, 0])).all()
    np.testing.assert_allclose(nll, -lp[np.arange(12), targets], rtol=1e-10)


def test_reference_logits_of_conversations_batched_together_equal_one_at_a_time(lab, tmp_path):
    """Right-padded conversations of different lengths in one forward give each conversation the rows it gets
    alone (the trainer's reference was 50 forwards of one conversation: 6.7 s for the 8B on the H100)."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_pipeline.evaluation.reference_logits import FILE, _batches, write_reference_logits

    rows = eval_rows(5)
    for i, r in enumerate(rows):  # answers of 1 to 5 times the length
        r["messages"][1]["content"] = " ".join([r["messages"][1]["content"]] * (i + 1))
    write_jsonl(tmp_path / "eval.jsonl", rows)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(lab["base_hf"]), dtype=torch.float32),
                                      str(lab["cand"]))
    tok = AutoTokenizer.from_pretrained(str(lab["cand"]))
    files = {}
    for name, budget in (("alone", 1), ("together", 2**30)):
        folder = tmp_path / name
        shutil.copytree(lab["cand"], folder)
        write_reference_logits(model, tok, folder, tmp_path / "eval.jsonl", max_seq_length=1024, top_k=64,
                               batch_bytes=budget)
        files[name] = dict(np.load(folder / FILE))
    assert len({len(x) for x in files["alone"]["keys"]}) == 1 and len(files["alone"]["keys"]) == 5
    assert (files["alone"]["ids"] == files["together"]["ids"]).all()
    np.testing.assert_allclose(files["together"]["logp"], files["alone"]["logp"], atol=1e-5)
    np.testing.assert_allclose(files["together"]["tail"], files["alone"]["tail"], atol=1e-5)
    # out of memory on a batch: its halves run on their own, down to one row, with the same result
    calls = []

    class Tight(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None):
            calls.append(len(input_ids))
            if len(input_ids) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    folder = tmp_path / "tight"
    shutil.copytree(lab["cand"], folder)
    write_reference_logits(Tight(model), tok, folder, tmp_path / "eval.jsonl", max_seq_length=1024, top_k=64,
                           batch_bytes=2**30)
    tight = dict(np.load(folder / FILE))
    assert calls == [5, 2, 3, 1, 2], calls  # 5 fails -> 2 and 3; 3 fails -> 1 and 2
    assert (tight["ids"] == files["alone"]["ids"]).all() and list(tight["keys"]) == list(files["alone"]["keys"])
    np.testing.assert_allclose(tight["logp"], files["alone"]["logp"], atol=1e-5)
    # the grouping itself: within the budget, one row at least, order kept
    seqs = [([0] * n, 1) for n in (3, 5, 2, 9)]
    assert [[len(s) for s, _ in g] for g in _batches(seqs, 10)] == [[3, 5], [2], [9]]
    assert [len(g) for g in _batches(seqs, 1)] == [1, 1, 1, 1]
