"""The gate on real models: tiny Gemma 3 adapters trained by the real trainer, exported through llama.cpp's
converter, evaluated as served by llama-cpp-python."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from forge_pipeline.evaluation.evaluate import evaluate_models
from forge_pipeline.evaluation.gate import decide
from forge_pipeline.evaluation.served import Sampling, ServedModel
from forge_pipeline.files import write_jsonl
from forge_pipeline_tests.helpers import make_tiny_gemma
from forge_pipeline_tests.tiny_models import WORDS

pytestmark = pytest.mark.slow
PROBES = ["the rest week", "the quiet morning week"]
SAMPLING = Sampling(max_tokens=32)


def rows(n: int, seed: int, scramble: bool = False, mismatch: bool = False) -> list[dict]:
    """Learnable conversations: the answer follows from the question. scramble: answers in random word order;
    mismatch: each answer under another conversation's question (the answers themselves unchanged)."""
    if mismatch:
        out = rows(n, seed)
        answers = [r["messages"][-1] for r in out]
        for i, r in enumerate(out):
            r["messages"] = r["messages"][:-1] + [answers[(i + 1) % n]]
        return out
    rnd, out = random.Random(seed), []
    for i in range(n):
        a, b = WORDS[(i + seed) % len(WORDS)], WORDS[(i * 3 + seed) % len(WORDS)]
        answer = f"I think the {a} {b} lesson is better looking back"
        if scramble:
            answer = " ".join(rnd.sample(answer.split(), len(answer.split())))
        out.append({"id": f"s{seed}-{i}", "source_file": f"Journal/{i % 7}.md", "messages": [
            {"role": "system", "content": "You are kind."}, {"role": "user", "content": f"the {a} {b} week"},
            {"role": "assistant", "content": answer}]})
    return out


def export(adapter: Path, out: Path, template: str | None = None) -> Path:
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.export.merge import merge_only

    merged = merge_only(adapter, out.with_name(out.stem + "-merged"))
    if template is not None:
        (merged / "chat_template.jinja").write_text(template)
    return convert_to_gguf(merged, out, "f16")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.training.trainer import train

    w = tmp_path_factory.mktemp("gate")
    base = make_tiny_gemma(w / "base")
    write_jsonl(w / "train.jsonl", rows(48, 0))
    write_jsonl(w / "scrambled.jsonl", rows(48, 0, scramble=True))
    write_jsonl(w / "eval.jsonl", rows(8, 1))

    def fit(name: str, data: str, steps: int) -> Path:  # the real trainer (lab["fit"] for a test's own model)
        return train(w / data, w / name, base_model=str(base), learning_rate=5e-3, num_epochs=10, batch_size=4,
                     gradient_accumulation_steps=1, eval_path=w / "eval.jsonl", max_seq_length=128, max_steps=steps,
                     min_examples=4, home=w / "home", force_cpu=True, eval_steps=steps, save_steps=1000,
                     log=lambda m: None)

    adapters = {"live": fit("live", "train.jsonl", 12), "better": fit("better", "train.jsonl", 48),
                "worse": fit("worse", "scrambled.jsonl", 24)}
    ggufs = {k: export(v, w / f"{k}.gguf") for k, v in adapters.items()}
    lab = {"w": w, "base_hf": base, "base": convert_to_gguf(base, w / "base.gguf", "f16"), "adapters": adapters,
           "ggufs": ggufs}

    def evaluate(candidate: ServedModel, adapter: Path, live: ServedModel | None = None, cache: str = "evaluation"):
        return evaluate_models(candidate, ServedModel(lab["base"]), adapter_dir=adapter, eval_path=w / "eval.jsonl",
                               train_path=w / "train.jsonl", live=live, probes=PROBES, sampling=SAMPLING,
                               cache_dir=w / cache, log=lambda m: None)

    lab["evaluate"], lab["fit"] = evaluate, fit
    return lab


def test_the_first_model_beats_the_base_and_is_deployed(lab):
    report = lab["evaluate"](ServedModel(lab["ggufs"]["live"]), lab["adapters"]["live"])
    decision = decide(report)
    assert report.candidate.eval_loss < report.base.eval_loss
    assert report.round_trip.ok and report.round_trip.end_of_turn_token == "<end_of_turn>"
    assert report.fidelity.quantization == "f16" and report.fidelity.kld_mean < 0.005
    assert decision.deploy, decision.reasons


def test_gate_accepts_a_better_candidate_and_refuses_a_worse_one(lab):
    live = ServedModel(lab["ggufs"]["live"])
    better = lab["evaluate"](ServedModel(lab["ggufs"]["better"]), lab["adapters"]["better"], live)
    assert better.candidate.eval_loss < better.live.eval_loss
    assert decide(better).deploy, decide(better).reasons
    worse = lab["evaluate"](ServedModel(lab["ggufs"]["worse"]), lab["adapters"]["worse"], live)
    d = decide(worse)
    assert not d.deploy and any("worse than the live model" in r for r in d.reasons), d.reasons
    assert worse.data_changes is None or worse.data_changes.unchanged >= 0


def test_answers_trained_under_the_wrong_prompts_lose_their_prompt_gain_and_are_refused(lab):
    """The same answers, each trained under another conversation's question: the model learns what an answer
    looks like but not which question it answers, so a neutral prompt costs it little (prompt gain), against
    the live model trained on the true pairs for as many steps."""
    write_jsonl(lab["w"] / "mismatched.jsonl", rows(48, 0, mismatch=True))
    adapter = lab["fit"]("mismatched", "mismatched.jsonl", 48)
    live = ServedModel(lab["ggufs"]["better"])
    report = lab["evaluate"](ServedModel(export(adapter, lab["w"] / "mismatched.gguf")), adapter, live)
    c, lv = report.candidate, report.live
    assert len(c.prompt_gains) == len(lv.prompt_gains) == len(report.base.prompt_gains) == 8
    assert c.prompt_gain < 0.7 * lv.prompt_gain, (c.prompt_gain, lv.prompt_gain)  # measured: 0.125 vs 0.246
    d = decide(report)
    assert not d.deploy and any("depend less on their prompts" in r for r in d.reasons), d.reasons


def test_a_zero_lora_adapter_is_no_better_than_live(lab, tmp_path):
    from safetensors.torch import load_file, save_file

    zero = tmp_path / "zero"
    shutil.copytree(lab["adapters"]["live"], zero)
    weights = load_file(str(zero / "adapter_model.safetensors"))
    save_file({k: v * 0 if "lora_B" in k else v for k, v in weights.items()}, str(zero / "adapter_model.safetensors"))
    report = lab["evaluate"](ServedModel(export(zero, tmp_path / "zero.gguf")), zero, ServedModel(lab["ggufs"]["live"]))
    assert report.candidate.eval_loss == pytest.approx(report.base.eval_loss, rel=1e-3)  # it changes nothing
    d = decide(report)
    assert not d.deploy and any("worse than the live model" in r for r in d.reasons), d.reasons


def test_a_gguf_with_another_template_fails_the_round_trip(lab, tmp_path):
    from forge_pipeline.training.chat_template import DEFAULT_CHAT_TEMPLATE

    gguf = export(lab["adapters"]["better"], tmp_path / "other.gguf", template=DEFAULT_CHAT_TEMPLATE)
    report = lab["evaluate"](ServedModel(gguf), lab["adapters"]["better"], cache="evaluation-other")
    assert not report.round_trip.ok and report.round_trip.mismatched == list(range(8))
    d = decide(report)
    assert not d.deploy and any("does not round-trip" in r for r in d.reasons)


def test_an_adapter_gguf_on_its_base_is_evaluated_as_served(lab, tmp_path):
    """The adapter-native path (issue 14): base GGUF + LoRA adapter GGUF, as serving loads them."""
    from forge_pipeline.export.base_gguf import ensure_base_gguf
    from forge_pipeline.export.lora_gguf import write_adapter_gguf

    adapter = lab["adapters"]["better"]
    manifest = json.loads((adapter / "manifest.json").read_text())
    base = ensure_base_gguf(adapter, str(lab["base_hf"]), manifest["base_model"]["fingerprint"], tmp_path / "bases",
                            "f16", log=lambda m: None)
    lora = tmp_path / "adapter.gguf"
    write_adapter_gguf(adapter, str(lab["base_hf"]), lora)
    served = ServedModel(Path(base.path), lora)
    report = evaluate_models(served, ServedModel(Path(base.path)), adapter_dir=adapter,
                             eval_path=lab["w"] / "eval.jsonl", train_path=lab["w"] / "train.jsonl", probes=PROBES,
                             sampling=SAMPLING, cache_dir=tmp_path / "evaluation", log=lambda m: None)
    merged = lab["evaluate"](ServedModel(lab["ggufs"]["better"]), adapter)
    assert report.round_trip.ok
    assert report.fidelity.kld_mean < 0.005
    assert report.candidate.eval_loss == pytest.approx(merged.candidate.eval_loss, rel=0.01)
    assert report.candidate.eval_loss < report.base.eval_loss
