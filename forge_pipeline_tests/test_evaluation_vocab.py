"""A live model of another family (another vocabulary) after the person switched base model: it is not
scored on the candidate's token ids, the report says so, the loss rule compares with the base, and the
probes are still compared. Real tiny models through llama.cpp; no training (a random LoRA on a tiny Gemma)."""
from __future__ import annotations

import pytest

from forge_pipeline.evaluation.evaluate import evaluate_models
from forge_pipeline.evaluation.gate import decide
from forge_pipeline.evaluation.served import Sampling, ServedModel
from forge_pipeline.files import write_jsonl
from forge_pipeline_tests.helpers import make_tiny_gemma, random_lora_adapter
from forge_pipeline_tests.tiny_models import WORDS, make_tiny_llama

pytestmark = pytest.mark.slow
PROBES = ["the rest week", "the quiet morning week"]


def eval_rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
        out.append({"id": f"e{i}", "messages": [{"role": "user", "content": f"the {a} {b} week"},
                                                {"role": "assistant", "content": f"I think the {a} {b} lesson"}]})
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.export.merge import merge_only

    w = tmp_path_factory.mktemp("vocab")
    base = make_tiny_gemma(w / "gemma")
    adapter = w / "adapter"
    random_lora_adapter(base, adapter)
    candidate = convert_to_gguf(merge_only(adapter, w / "merged", dtype="float32"), w / "candidate.gguf", "f16")
    # The live model of another family: a tiny Llama whose SentencePiece vocabulary has 300 pieces, fewer
    # than the candidate's 400, so the candidate's ids run past its vocabulary.
    live = convert_to_gguf(make_tiny_llama(w / "llama", pieces=300, vocab_size=300), w / "live.gguf", "f16")
    write_jsonl(w / "eval.jsonl", eval_rows(4))
    return {"w": w, "adapter": adapter, "candidate": candidate, "base": convert_to_gguf(base, w / "base.gguf", "f16"),
            "live": live}


def test_a_live_model_with_another_vocabulary_is_not_scored_on_the_candidates_ids(models):
    import llama_cpp

    m = models
    llm = llama_cpp.Llama(str(m["live"]), verbose=False, vocab_only=True)
    assert llm.n_vocab() == 300  # independent check that the live model really has a smaller vocabulary
    llm.close()
    report = evaluate_models(ServedModel(m["candidate"]), ServedModel(m["base"]), adapter_dir=m["adapter"],
                             eval_path=m["w"] / "eval.jsonl", live=ServedModel(m["live"]), probes=PROBES,
                             sampling=Sampling(max_tokens=16), cache_dir=m["w"] / "evaluation", log=lambda s: None)
    live = report.live
    assert live.eval_loss is None and live.eval_tokens == 0
    assert live.not_scored and "vocabulary" in live.not_scored
    assert len(live.probes) == len(PROBES)  # probes are still compared
    assert report.candidate.eval_loss is not None and report.base.eval_loss is not None
    d = decide(report)
    loss_lines = [r for r in d.reasons + d.passed if "base" in r and "loss" in r]
    assert len(loss_lines) == 1 and "vocabulary" in loss_lines[0], (d.reasons, d.passed)
    assert not any("missing" in r for r in d.reasons), d.reasons
    if any(r in d.reasons for r in loss_lines):
        assert loss_lines[0].count(". ") == 0  # one sentence
