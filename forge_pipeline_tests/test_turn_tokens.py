"""Untrained turn tokens get trained rows (training/turn_tokens.py), the same in training, in every GGUF forge
converts (export/turn_rows.py) and in every reload of the base: checked with numpy cosines and means computed
here, the GGUF read back with the gguf library, and the served model compared with the trained one."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from forge_pipeline.training.chat_template import GEMMA_CHAT_TEMPLATE
from forge_pipeline.training.turn_tokens import seed_turn_rows
from forge_pipeline_tests.helpers import LLAMA3_TURN_TOKENS, make_tiny_gemma, make_tiny_llama3_base


def neighbours(weight: np.ndarray, row: int, cosine: float = 0.99) -> int:
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return int((unit @ unit[row] > cosine).sum()) - 1


def untrained_cluster(model, rows: list[int]) -> None:
    """What pretraining leaves: ``rows`` all near one vector (initialisation, never moved)."""
    w = model.get_input_embeddings().weight
    centre = torch.randn(w.shape[1])
    with torch.no_grad():
        for r in rows:
            w[r] = centre + 0.001 * torch.randn(w.shape[1])


def bf16_mean_of_nonzero_rows(w: np.ndarray) -> np.ndarray:
    """The seed for a read-only turn token, computed here: the mean of the rows that are not zero, in float64,
    rounded to bfloat16 by truncating to the upper 16 bits with round-to-nearest-even."""
    keep = np.linalg.norm(w, axis=1) > 0
    mean = w[keep].astype(np.float64).mean(0).astype(np.float32)
    bits = mean.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def gguf_rows(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader

    return {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(str(path)).tensors
            if t.name in ("token_embd.weight", "output.weight")}


def dir_digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir()) if p.is_file()}


def test_untrained_end_of_turn_gets_eos_row_and_nothing_else_moves(tmp_path):
    base = make_tiny_gemma(tmp_path / "gemma")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    eot, sot, eos = (tok.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<start_of_turn>", tok.eos_token))
    cluster = [eot] + list(range(200, 300))
    untrained_cluster(model, cluster)
    before = model.get_input_embeddings().weight.detach().numpy().copy()
    assert neighbours(before, eot) >= 100  # the defect: end of turn indistinguishable from 100 unused rows

    seeded = seed_turn_rows(model, tok)

    after = model.get_input_embeddings().weight.detach().numpy()
    assert seeded == {"<end_of_turn>": tok.eos_token}
    assert np.array_equal(after[eot], before[eos]) and neighbours(after, eot) == 1  # EOS itself only
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [eot]  # start of turn (trained here), EOS and the unused rows untouched
    assert np.array_equal(after[sot], before[sot])
    # the output layer is tied: the end-of-turn logit is now EOS's, a text end the base already predicts
    assert np.array_equal(model.get_output_embeddings().weight.detach().numpy()[eot], before[eos])


def test_trained_turn_tokens_are_left_alone_and_an_own_template_is_seeded_too(tmp_path):
    base = make_tiny_gemma(tmp_path / "gemma")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    before = model.get_input_embeddings().weight.detach().numpy().copy()
    assert seed_turn_rows(model, tok) == {}  # random rows: every token is distinct
    assert np.array_equal(model.get_input_embeddings().weight.detach().numpy(), before)

    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    untrained_cluster(model, [eot] + list(range(200, 300)))
    tok.chat_template = GEMMA_CHAT_TEMPLATE + "{# the base's own #}"  # a base that ships its own template
    assert seed_turn_rows(model, tok) == {"<end_of_turn>": tok.eos_token}
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    untrained_cluster(model, [eot] + list(range(200, 300)))
    assert seed_turn_rows(model, tok) == {}  # a plain-text template has no turn token to seed


def test_llama3_style_base_zero_rows_are_seeded_in_memory_and_in_its_gguf_alike(tmp_path):
    """A pretrained Llama 3.1 base's case: own template, untied output layer, chat tokens at zero. In memory, <|eot_id|>
    takes EOS's input and output rows and the header tokens the (bf16) mean of the trained rows; the GGUF
    converted from the untouched folder holds the same rows in f16; the user's folder is not rewritten."""
    from forge_pipeline.export.gguf import convert_to_gguf

    base = make_tiny_llama3_base(tmp_path / "llama3")
    on_disk = dir_digest(base)
    model, tok = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), AutoTokenizer.from_pretrained(base)
    emb0 = model.get_input_embeddings().weight.detach().numpy().copy()
    out0 = model.get_output_embeddings().weight.detach().numpy().copy()
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAMA3_TURN_TOKENS}
    eot, eos = ids["<|eot_id|>"], tok.eos_token_id

    seeded = seed_turn_rows(model, tok)

    assert seeded == {"<|eot_id|>": tok.eos_token, "<|start_header_id|>": "mean of trained rows",
                      "<|end_header_id|>": "mean of trained rows"}
    emb, out = model.get_input_embeddings().weight.detach().numpy(), model.get_output_embeddings().weight.detach().numpy()
    assert np.array_equal(emb[eot], emb0[eos]) and np.array_equal(out[eot], out0[eos])
    for t in ("<|start_header_id|>", "<|end_header_id|>"):
        assert np.array_equal(emb[ids[t]], bf16_mean_of_nonzero_rows(emb0))
        assert np.array_equal(out[ids[t]], bf16_mean_of_nonzero_rows(out0))
    untouched = [r for r in range(len(emb0)) if r not in ids.values()]
    assert np.array_equal(emb[untouched], emb0[untouched]) and np.array_equal(out[untouched], out0[untouched])
    assert seed_turn_rows(model, tok) == {}  # idempotent: seeded rows are trained ones now

    rows = gguf_rows(convert_to_gguf(base, tmp_path / "base-f16.gguf", "f16"))
    assert dir_digest(base) == on_disk
    assert np.array_equal(rows["token_embd.weight"], emb.astype(np.float16).astype(np.float32))
    assert np.array_equal(rows["output.weight"], out.astype(np.float16).astype(np.float32))


@pytest.mark.slow
def test_training_on_a_llama3_style_base_serves_what_it_trained(curated, tmp_path):
    """End to end on the CPU: training seeds in memory and says so; the adapter exported onto the base GGUF,
    served by llama.cpp, matches the trained model (the trainer's own reference logits, and the Hugging Face
    reference the evaluation falls back to); in the served base, <|eot_id|> scores as EOS everywhere."""
    from forge_pipeline.evaluation.evaluate import evaluate_models
    from forge_pipeline.evaluation.served import LoadedModel, Sampling, ServedModel
    from forge_pipeline.export.pipeline import export_model
    from forge_pipeline.training.trainer import run_training
    from forge_pipeline_tests.helpers import tiny_cfg

    base = make_tiny_llama3_base(tmp_path / "llama3")
    logs: list[str] = []
    report = run_training(curated.curated_path, tmp_path / "out", tiny_cfg(base, max_steps=2, eval_steps=100),
                          eval_path=curated.eval_path, home=curated.home_dir, log=logs.append)
    said = [m for m in logs if "start from trained rows" in m]
    assert said and "<|eot_id|> from </s>" in said[0], logs
    adapter = Path(report.final_dir)
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["base_model"]["seeded_turn_tokens"]["<|eot_id|>"] == "</s>"
    from forge_pipeline.orchestration.metadata import adapter_metadata  # and the Dagster UI shows it

    assert "<|eot_id|> from </s>" in adapter_metadata({"adapter_dir": str(adapter)})["seeded_turn_tokens"]

    exported = export_model(adapter, curated.home_dir / "models", quant="f16", validate=False, log=lambda m: None)
    served = ServedModel(Path(exported.base_gguf), Path(exported.gguf_path))
    kw = dict(adapter_dir=adapter, eval_path=curated.eval_path, probes=["What did I learn?"], max_examples=6,
              sampling=Sampling(temperature=0.0, max_tokens=8), log=lambda m: None)
    trainer_ref = evaluate_models(served, ServedModel(Path(exported.base_gguf)), **kw)
    assert trainer_ref.fidelity.reference.startswith("trainer") and trainer_ref.round_trip.ok
    # measured: 5e-10 and 9e-10 (top-1 agreement 1.0) seeded alike; a GGUF left unseeded 5.7e-6 against the
    # trainer's top-256 reference and 4.1e-4 against the Hugging Face one, top-1 agreement 0.975 for both
    assert trainer_ref.fidelity.kld_mean < 1e-7 and trainer_ref.fidelity.top1_agreement == 1.0, trainer_ref.fidelity
    (adapter / "reference_logits.npz").unlink()
    hf_ref = evaluate_models(served, ServedModel(Path(exported.base_gguf)), **kw)
    assert hf_ref.fidelity.reference == "hf", hf_ref.fidelity
    assert hf_ref.fidelity.kld_mean < 1e-7 and hf_ref.fidelity.top1_agreement == 1.0, hf_ref.fidelity

    tok = AutoTokenizer.from_pretrained(adapter)
    eot, eos = tok.convert_tokens_to_ids("<|eot_id|>"), tok.eos_token_id
    ids = tok.apply_chat_template([{"role": "user", "content": "I think the team learned"}],
                                  add_generation_prompt=True, tokenize=True, return_dict=False)
    with LoadedModel(ServedModel(Path(exported.base_gguf)), n_ctx=128) as m:
        logits = m.logits(list(ids))
    assert np.allclose(logits[:, eot], logits[:, eos], atol=1e-3)


def test_a_merge_holds_the_trained_rows_and_its_gguf_needs_no_second_seeding(tmp_path):
    """The merged export (merge_only, for Ollama and LM Studio) starts from the seeded base, as training did."""
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.export.merge import merge_only
    from forge_pipeline.export.turn_rows import seed_gguf_turn_rows
    from forge_pipeline_tests.helpers import random_lora_adapter

    base = make_tiny_llama3_base(tmp_path / "llama3")
    model, tok = random_lora_adapter(base, tmp_path / "adapter")
    seed_turn_rows(model, tok)  # as training seeds the model it holds
    trained = model.get_input_embeddings().weight.detach().numpy().copy()
    trained_out = model.get_output_embeddings().weight.detach().numpy().copy()

    merged = AutoModelForCausalLM.from_pretrained(merge_only(tmp_path / "adapter", tmp_path / "merged", dtype="float32"))
    assert np.array_equal(merged.get_input_embeddings().weight.detach().numpy(), trained)
    assert np.array_equal(merged.get_output_embeddings().weight.detach().numpy(), trained_out)
    gguf = convert_to_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f16")
    assert seed_gguf_turn_rows(gguf) == {}  # nothing left untrained
