"""The quality loop's metrics, gate rules and persistence, each checked by an independent method."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from forge_pipeline.evaluation import metrics
from forge_pipeline.evaluation.gate import (
    GateThresholds,
    decide,
    excess_p,
    latest_key,
    load_decision,
    paired_drop_p,
    save_evaluation,
)
from forge_pipeline.evaluation.nightly import headline, markdown
from forge_pipeline.evaluation.probes import DEFAULT_PROBES, ProbeFileError, load_probes
from forge_pipeline.evaluation.report import EvaluationReport, Fidelity, ModelResult, ProbeResult, RoundTrip

README_LOOP = "I learned that I am not the only one who feels like I am not good enough. " * 6


def test_the_readme_loop_and_invented_turns_are_caught():
    assert metrics.loop_reason(README_LOOP)
    fine = ("Looking back, the week was about rest. I noticed that running in the morning made the meetings "
            "easier, and that I postponed the hard conversation again. Next time I will book it first.")
    assert metrics.loop_reason(fine) is None
    assert metrics.invented_turn("Sure, rest more.\n### Manager: why?") == "### Manager:"
    assert metrics.invented_turn("Rest more.\n\n### User:\nand then") == "### User:"
    assert metrics.invented_turn("ok<start_of_turn>user") == "<start_of_turn>"
    assert metrics.invented_turn("I told my manager: not this week.") is None
    assert metrics.loop_reason("") is None  # empty is counted as empty, not as a loop


def test_longest_copied_run_matches_brute_force():
    rnd = random.Random(0)
    for _ in range(40):
        corpus = "".join(rnd.choice("ab c") for _ in range(rnd.randint(0, 60)))
        answer = "".join(rnd.choice("abc ") for _ in range(rnd.randint(0, 25)))
        a, t = metrics._normalize(answer), metrics._normalize(corpus)
        brute = max([j - i for i in range(len(a)) for j in range(i + 1, len(a) + 1) if a[i:j] in t], default=0)
        assert metrics.longest_copied_run(answer, corpus) == brute
    longest, share = metrics.regurgitation(["x" * 10 + "the exact sentence from my journal, copied word for word",
                                            "nothing shared"], ["the exact sentence from my journal, copied word for word!"])
    assert longest == len("the exact sentence from my journal, copied word for word") and share == 0.5


def test_kl_and_top1_agree_with_torch():
    import torch

    rng = np.random.default_rng(0)
    ref, model = rng.normal(size=(7, 50)).astype(np.float32), rng.normal(size=(7, 50)).astype(np.float32)
    kl, agree = metrics.kl_and_top1(ref, model, chunk=3)
    expected = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(model), -1), torch.log_softmax(torch.tensor(ref), -1),
                                          log_target=True, reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-6)
    assert list(agree) == list(ref.argmax(-1) == model.argmax(-1))
    assert np.allclose(metrics.kl_and_top1(ref, ref)[0], 0, atol=1e-9)
    # a padded vocabulary (extra rows) is left out
    assert np.allclose(metrics.kl_and_top1(ref, np.concatenate([ref, np.zeros((7, 5), np.float32)], 1))[0], 0, atol=1e-9)


def test_probe_file_overrides_the_defaults(tmp_path):
    assert load_probes(None) == list(DEFAULT_PROBES)
    (tmp_path / "p.json").write_text(json.dumps(["How was my day?", " "]))
    assert load_probes(tmp_path / "p.json") == ["How was my day?"]
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert load_probes(tmp_path / "p.txt") == ["one", "two"]
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ProbeFileError, match="bad.json"):
        load_probes(tmp_path / "bad.json")
    with pytest.raises(ProbeFileError, match="not found"):
        load_probes(tmp_path / "missing.txt")


def _probe(text="A calm, finished answer.", **flags) -> ProbeResult:
    return ProbeResult(prompt="p", text=text, **flags)


def make_report(cand_loss=2.0, live_loss: float | None = 2.1, base_loss=3.0, kld=0.001, quant="f16", rt_ok=True,
                cand_flags=0, live_flags=1, regurgitation=0.0, n_probes=8) -> EvaluationReport:
    def model(role, loss, flagged):
        probes = [_probe(loop="repeats") if i < flagged else _probe() for i in range(n_probes)]
        return ModelResult(role=role, gguf=f"{role}.gguf", eval_loss=loss, probes=probes)

    models = {"candidate": model("candidate", cand_loss, cand_flags), "base": model("base", base_loss, 2)}
    models["candidate"].regurgitation_share = regurgitation
    if live_loss is not None:
        models["live"] = model("live", live_loss, live_flags)
    return EvaluationReport(created="2026-11-25T03:00:00Z", candidate_key="k1", eval_examples=4, eval_tokens=100,
                            max_seq_length=256, sampling={}, probe_prompts=["p"] * n_probes, models=models,
                            fidelity=Fidelity(kld_mean=kld, kld_p99=kld, top1_agreement=0.99, positions=100, quantization=quant),
                            round_trip=RoundTrip(ok=rt_ok, conversations=4, problems=[] if rt_ok else ["prompt tokens differ"]),
                            loss_curve=[(0, 3.0), (12, 2.4), (24, 2.0)])


def test_a_good_candidate_passes_every_rule():
    d = decide(make_report())
    assert d.deploy and d.reasons == [] and len(d.passed) == 6 and d.against == "live"
    # the live model's gains missing, rule 6 falls back to the base's, and says so when those are missing too
    assert d.passed[-1] == "prompt gain not compared: the base model was not scored"  # said, not silently skipped


@pytest.mark.parametrize("change, words", [
    (dict(kld=0.2), "not faithful"),
    (dict(kld=0.2, quant="q4_k_m"), "not faithful"),
    (dict(rt_ok=False), "round-trip"),
    (dict(cand_flags=5), "loops or invents turns in 5 of 8"),
    (dict(regurgitation=0.5), "verbatim"),
    (dict(cand_loss=2.2), "worse than the live model's"),
])
def test_each_rule_refuses_with_one_sentence(change, words):
    d = decide(make_report(**change))
    assert not d.deploy and len(d.reasons) == 1 and words in d.reasons[0]


def test_excess_broken_answers_p_is_the_share_of_relabellings_at_least_as_lopsided():
    """excess_p against brute force: every way of spreading the broken answers over the two sets of answers,
    equally likely under 'same rate', counted directly."""
    from itertools import combinations

    for cand_n, ref_n, c, r in [(8, 8, 4, 0), (8, 8, 3, 2), (8, 8, 5, 1), (8, 8, 8, 0), (4, 6, 2, 1), (8, 8, 0, 0)]:
        broken = c + r
        spreads = list(combinations(range(cand_n + ref_n), broken))  # positions < cand_n are the candidate's
        lopsided = sum(sum(i < cand_n for i in spread) >= c for spread in spreads)
        assert excess_p(c, cand_n, r, ref_n) == pytest.approx(lopsided / len(spreads)), (c, r)


def test_more_broken_probe_answers_refuse_only_beyond_sampling_noise():
    """The gate's probe rule on 8 sampled answers each (the end-to-end run's first night had 3 broken answers
    against the base's 2 and was refused by the literal rule)."""
    d = decide(make_report(cand_flags=3, live_flags=2))
    assert d.deploy and any("within sampling noise" in p for p in d.passed), d.passed
    assert not decide(make_report(cand_flags=4, live_flags=0)).deploy  # p 0.038
    assert not decide(make_report(cand_flags=8, live_flags=0)).deploy
    assert not decide(make_report(cand_flags=3, live_flags=0)).deploy  # p 0.100, not above alpha
    literal = GateThresholds(probe_alpha=0)  # any excess refuses
    assert decide(make_report(cand_flags=3, live_flags=2), literal).reasons[0].endswith("model's 2 of 8.")
    # too few probes for any outcome to fall to alpha (2 of 2 against 0 of 2: p 0.17): the literal rule
    small = decide(make_report(cand_flags=2, live_flags=1, n_probes=2))
    assert not small.deploy and small.reasons[0].endswith("model's 1 of 2.")  # no p: it did not decide
    assert not decide(make_report(cand_flags=3, live_flags=2), literal).deploy
    assert decide(make_report(cand_flags=3, live_flags=2), GateThresholds(probe_alpha=0, probe_tolerance=1)).deploy


def test_quantization_sets_the_kld_bound():
    assert decide(make_report(kld=0.08, quant="q4_k_m")).deploy  # within q4_k_m's bound
    assert not decide(make_report(kld=0.08, quant="f16")).deploy
    assert decide(make_report(kld=0.08, quant="f16"), GateThresholds(kld_bounds={"f16": 0.1})).deploy


def test_first_model_must_beat_the_base():
    assert decide(make_report(live_loss=None, cand_loss=2.9)).deploy
    d = decide(make_report(live_loss=None, cand_loss=3.0))
    assert not d.deploy and d.against == "base" and "does not beat the base" in d.reasons[0]
    assert decide(make_report(cand_loss=2.0, live_loss=1.0), against="base").deploy  # --against base


def test_decisions_survive_a_restart(tmp_path):
    report, decision = make_report(cand_loss=2.5), None
    decision = decide(report)
    folder = save_evaluation(tmp_path, report, decision, markdown(report, decision, tmp_path))
    assert (folder / "report.md").read_text().startswith("# Nightly evaluation")
    code = ("import sys; from forge_pipeline.evaluation.gate import load_decision, latest_key, load_report; "
            "k = latest_key(sys.argv[1]); d = load_decision(sys.argv[1], k); r = load_report(sys.argv[1], k); "
            "print(k, d.deploy, d.reasons[0], r.candidate.eval_loss)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert out.split()[:3] == ["k1", "False", "Eval"] and out.strip().endswith("2.5")
    assert latest_key(tmp_path) == "k1" and load_decision(tmp_path, "k1") == decision
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_headline_numbers_are_typed_and_rounded():
    h = headline(make_report(), decide(make_report()))
    assert h["deploy"] is True and h["eval_loss_candidate"] == 2.0 and h["improvement_vs_live_pct"] == 4.76
    assert h["improvement_vs_base_pct"] == 33.33 and isinstance(h["loop_rate"], float)
    assert all(not isinstance(v, str) for v in h.values())  # numbers only: no vault text in metadata


def test_a_live_model_of_another_vocabulary_leaves_the_loss_rule_to_the_base():
    report = make_report(cand_loss=2.5, live_loss=None, base_loss=3.0)
    live = report.models["candidate"].model_copy(update={"role": "live", "eval_loss": None,
                                                         "not_scored": "its vocabulary differs (400 vs 300 tokens)"})
    report.models["live"] = live
    d = decide(report)
    assert d.deploy and any("beats the base's 3.0000" in p and "vocabulary" in p for p in d.passed), d.passed
    report.models["candidate"].eval_loss = 3.1
    d = decide(report)
    assert not d.deploy and len(d.reasons) == 1 and "does not beat the base" in d.reasons[0]
    assert "vocabulary" in d.reasons[0] and d.reasons[0].count(". ") == 0
    assert "not measured: its vocabulary differs" in markdown(report, d)


# Per-conversation prompt gains measured together on the sample vault's 11 eval conversations (CPU default,
# after the turn-token fix): the live model (night 3) and a night trained on the same answers scrambled
# across their prompts, whose eval loss was 0.4% lower than the live model's (bench/results/quality.json,
# "prompt_gain", second run: p 0.0127).
LIVE_GAINS = [0.2315, 0.0898, 0.4726, 0.2479, 0.2662, 0.166, -0.0698, 0.4149, 0.0675, 0.1529, 0.1653]
SCRAMBLED_GAINS = [0.1456, -0.0502, 0.4465, 0.0678, 0.2867, 0.1156, -0.0108, 0.2661, 0.0186, 0.1613, 0.0344]


def test_paired_drop_p_is_the_share_of_sign_flips_at_least_as_low():
    """Against brute force over every sign pattern, and against scipy's own paired permutation test."""
    from itertools import product

    from scipy.stats import permutation_test

    rnd = np.random.default_rng(3)
    for n in (1, 4, 11):
        c, r = rnd.normal(0.1, 0.1, n), rnd.normal(0.15, 0.1, n)
        d = c - r
        brute = np.mean([sum(s * x for s, x in zip(signs, d)) <= d.sum() + 1e-12 for signs in product((1, -1), repeat=n)])
        assert paired_drop_p(list(c), list(r)) == pytest.approx(brute)
        if n == 1:  # scipy's test wants two or more pairs
            continue
        sp = permutation_test((c, r), lambda x, y: np.mean(x - y), permutation_type="samples", alternative="less",
                              n_resamples=np.inf).pvalue
        assert paired_drop_p(list(c), list(r)) == pytest.approx(sp)
    c, r = rnd.normal(0.1, 0.1, 40), rnd.normal(0.13, 0.1, 40)  # sampled sign patterns beyond 16
    sp = permutation_test((c, r), lambda x, y: np.mean(x - y), permutation_type="samples", alternative="less",
                          n_resamples=200_000, rng=1).pvalue
    assert abs(paired_drop_p(list(c), list(r)) - sp) < 0.01
    assert paired_drop_p(SCRAMBLED_GAINS, LIVE_GAINS) == pytest.approx(0.0127, abs=1e-4)
    assert paired_drop_p(LIVE_GAINS, LIVE_GAINS) == 1.0


def _with_gains(report: EvaluationReport, cand, live=LIVE_GAINS) -> EvaluationReport:
    report.models["candidate"].prompt_gains = list(cand)
    if report.live is not None:
        report.models["live"].prompt_gains = list(live)
    report.models["base"].prompt_gains = [g * 1.3 for g in live]
    return report


def test_a_candidate_whose_answers_ignore_their_prompts_is_refused():
    """The night trained on scrambled answers had the better eval loss; only the prompt gain tells."""
    d = decide(_with_gains(make_report(cand_loss=2.09, live_loss=2.1), SCRAMBLED_GAINS))
    assert not d.deploy and len(d.reasons) == 1 and "depend less on their prompts" in d.reasons[0], d.reasons
    assert "0.135" in d.reasons[0] and "0.200" in d.reasons[0] and "p 0.013" in d.reasons[0]  # as measured


@pytest.mark.parametrize("cand, why", [
    ([g * 0.95 for g in LIVE_GAINS], "a good night's gain (measured: 0.98 of the live model's)"),
    (SCRAMBLED_GAINS[:3], "three conversations cannot show a drop beyond chance (p >= 1/8)"),
    ([g + (0.2 if i % 2 else -0.25) for i, g in enumerate(LIVE_GAINS)], "lower on average, but noise"),
])
def test_the_prompt_gain_rule_passes_what_chance_or_a_good_night_explains(cand, why):
    live = LIVE_GAINS[:len(cand)]
    d = decide(_with_gains(make_report(), cand, live))
    assert d.deploy and any(p.startswith("prompt gain") for p in d.passed), (why, d.reasons)


def test_a_gain_that_is_not_a_number_is_not_compared():
    d = decide(_with_gains(make_report(), [float("nan")] + SCRAMBLED_GAINS[1:]))
    assert d.deploy and "prompt gain not compared: a gain is not a finite number" in d.passed


# The same run's base and night 1 (the first fine-tune), scored on the same 11 conversations
# (bench/results/quality.json, "prompt_gain_models"): against the base, night 1 kept 0.75 of its gain (p 0.08),
# the scrambled night 0.52 (p 0.009).
BASE_GAINS = [0.286, 0.2719, 0.8965, 0.1089, 0.3902, 0.2823, -0.1342, 0.2697, 0.1871, 0.1919, 0.0729]
NIGHT1_GAINS = [0.2254, 0.0954, 0.5148, 0.1785, 0.2197, 0.1478, -0.1058, 0.3881, 0.1257, 0.1873, 0.129]


def _first(cand) -> EvaluationReport:
    report = make_report(live_loss=None, cand_loss=2.9)
    report.models["candidate"].prompt_gains, report.models["base"].prompt_gains = list(cand), list(BASE_GAINS)
    return report


def test_a_scrambled_first_night_is_refused_against_the_base_and_a_good_one_deployed():
    """No live model: rule 6 holds the candidate to a lower share of the base's gain (0.6), since a good first
    fine-tune keeps only 0.75 of it; the scrambled night, 0.52, is still beyond that and beyond chance."""
    d = decide(_first(SCRAMBLED_GAINS))
    assert not d.deploy and d.against == "base" and len(d.reasons) == 1, d.reasons
    assert "than the base model's" in d.reasons[0] and "(52%, below 60%; p 0.009" in d.reasons[0], d.reasons
    good = decide(_first(NIGHT1_GAINS))
    assert good.deploy and any(p.startswith("prompt gain 0.191 vs base 0.257 (75%") for p in good.passed), good.passed
    # the live model's bar (0.85) would have refused night 1 had its drop been beyond chance: the bars differ
    assert decide(_first(NIGHT1_GAINS), GateThresholds(prompt_gain_base_ratio=0.85, prompt_gain_alpha=0.1)).deploy is False


def test_a_live_model_of_another_vocabulary_falls_back_to_the_base_for_the_prompt_gain():
    report = _with_gains(make_report(), SCRAMBLED_GAINS)
    report.models["live"].prompt_gains, report.models["live"].eval_loss = None, None
    report.models["live"].not_scored = "its vocabulary differs from the candidate's"
    report.models["base"].prompt_gains = list(BASE_GAINS)
    d = decide(report)
    assert not d.deploy and any("than the base model's" in r for r in d.reasons), d.reasons


def test_the_base_bar_is_a_floor_every_night_against_a_slow_slide():
    """Night to night each step looks fine (0.9 of the live model's gain: above 0.85), but the live model
    had already slid to 0.65 of the base's: the candidate, at 0.585 of it, is below the base's bar."""
    report = make_report()
    live = [g * 0.65 for g in BASE_GAINS]
    report.models["live"].prompt_gains, report.models["base"].prompt_gains = live, list(BASE_GAINS)
    report.models["candidate"].prompt_gains = [g * 0.9 for g in live]
    d = decide(report)
    assert not d.deploy and len(d.reasons) == 1 and "than the base model's" in d.reasons[0], d.reasons
    assert any(p.startswith("prompt gain") and "vs live" in p and "(90%" in p for p in d.passed), d.passed
    report.models["candidate"].prompt_gains = list(live)  # no further slide: both bars hold (0.65 of the base's)
    d = decide(report)
    assert d.deploy and sum(p.startswith("prompt gain") for p in d.passed) == 2, d.passed
    assert headline(report, d)["prompt_gain_base"] == pytest.approx(np.mean(BASE_GAINS), abs=1e-4)


def test_the_prompt_gain_rule_can_be_turned_off():
    off = GateThresholds(prompt_gain_ratio=0, prompt_gain_base_ratio=0)
    for report in (_first(SCRAMBLED_GAINS), _with_gains(make_report(), SCRAMBLED_GAINS)):
        d = decide(report, off)
        assert d.deploy and not any("prompt" in p for p in d.passed + d.reasons), d.passed
    h = headline(_with_gains(make_report(), SCRAMBLED_GAINS), decide(_first(SCRAMBLED_GAINS)))
    assert h["prompt_gain_candidate"] == pytest.approx(np.mean(SCRAMBLED_GAINS), abs=1e-4)
    assert h["prompt_gain_live"] == pytest.approx(np.mean(LIVE_GAINS), abs=1e-4)


def test_a_long_answer_is_scored_on_the_same_tokens_under_both_prompts(tmp_path):
    """The neutral prompt is shorter than the answer's own: cut at max_len on its own, the neutral sequence
    would keep more of a long answer, and the prompt gain would compare two different spans."""
    from transformers import AutoTokenizer

    from forge_pipeline.evaluation.reference import neutral_prompt_sequences, training_sequences
    from forge_pipeline.training.chat_template import prepare_tokenizer
    from forge_pipeline_tests.helpers import make_gemma_tokenizer
    from forge_pipeline_tests.tiny_models import WORDS

    tok = AutoTokenizer.from_pretrained(str(make_gemma_tokenizer(tmp_path / "tok")))
    prepare_tokenizer(tok)
    long_answer = " ".join(WORDS[i % len(WORDS)] for i in range(300))
    rows = [{"messages": [{"role": "system", "content": "You are kind."},
                          {"role": "user", "content": " ".join(WORDS[:40])}, {"role": "assistant", "content": a}]}
            for a in (long_answer, "a short answer")]
    own, neutral = training_sequences(tok, rows, 128), neutral_prompt_sequences(tok, rows, 128)
    assert len(own) == len(neutral) == 2 and len(own[0][0]) == 128  # the long one is cut
    for (ids, start), (n_ids, n_start) in zip(own, neutral):
        assert n_start < start and n_ids[n_start:] == ids[start:]  # the same answer tokens, nothing more
