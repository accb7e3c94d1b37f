"""Adapter export: a PEFT LoRA on a tiny real Llama becomes a llama.cpp adapter GGUF that, applied to the cached
base GGUF by real llama-cpp-python, gives the merged model's outputs; a mismatched adapter is refused."""
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from forge_pipeline.export.base_gguf import base_ggufs
from forge_pipeline.export.manifest import ExportManifest, read_last_export
from forge_pipeline.export.merge import ExportError
from forge_pipeline.export.pipeline import export_model
from forge_pipeline_tests.tiny_models import make_tiny_llama

# the plain-text template the trainer falls back to for a base without one (training/chat_template.py)
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = [1, 5, 17, 33, 80, 120, 7, 9, 200, 44, 13, 61, 90, 2]


def make_adapter(base: Path, out: Path, seed: int, **lora_kw) -> Path:
    """A LoRA with random (non-zero) B on all 7 projections, saved as the trainer saves it (with tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": TARGETS, **lora_kw}))
    torch.manual_seed(seed)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.3)
    peft.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    tok.save_pretrained(out)
    (out / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    return out


def merged_logits(base: Path, adapter: Path) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].numpy()


def llama_logits(gguf: Path, lora: Path | None) -> np.ndarray:
    from forge_pipeline.export.validate import open_llama

    llm = open_llama(gguf, lora, n_ctx=64, logits_all=True)
    try:
        llm.eval(IDS)
        return np.array(llm.scores[:len(IDS)])
    finally:
        llm.close()


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean KL(p || q) over positions, in float64 (an independent check of llama.cpp against transformers)."""
    def logsoftmax(x):
        x = x.astype(np.float64)
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    lp, lq = logsoftmax(p_logits), logsoftmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    base = make_tiny_llama(root / "base")
    eval_path = root / "eval.jsonl"
    rows = [{"messages": [{"role": "user", "content": "I think the team learned"},
                          {"role": "assistant", "content": "looking back the week was quiet and better"}]},
            {"messages": [{"role": "user", "content": "what did I realize"},
                          {"role": "assistant", "content": "rest work decision running notes"}]}]
    eval_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, base, eval_path


@pytest.mark.slow
def test_adapter_gguf_on_cached_base_matches_the_merged_model(tiny):
    root, base, eval_path = tiny
    home = root / "home"
    adapter = make_adapter(base, root / "adapter-a", seed=1)
    report = export_model(adapter, home / "models", quant="f16", eval_path=eval_path, log=lambda m: None)

    assert report.kind == "adapter" and report.status == "exported"
    lora, base_gguf = Path(report.gguf_path), Path(report.base_gguf)
    assert lora.name.startswith("adapter-") and lora.parent.parent == home / "models"
    assert base_gguf.is_relative_to(home / "base_models")
    assert stat.S_IMODE(os.stat(lora).st_mode) == 0o600 and stat.S_IMODE(os.stat(base_gguf).st_mode) == 0o600

    from gguf import GGUFReader

    fields = GGUFReader(str(lora)).fields
    assert fields["general.type"].contents() == "adapter" and fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == 16.0
    assert fields["general.architecture"].contents() == "llama"
    assert fields["forge.base_gguf_sha256"].contents() == hashlib.sha256(base_gguf.read_bytes()).hexdigest()
    assert fields["forge.adapter_fingerprint"].contents() == report.version.split("-")[-1] + \
        fields["forge.adapter_fingerprint"].contents()[8:]

    # the adapter applied by llama.cpp does what merging does (KL ~1e-8 measured; a wrong q/k row permutation
    # gives ~5e-3), and it really changes the base's outputs
    merged, bare = merged_logits(base, adapter), merged_logits(base, None)
    with_lora = llama_logits(base_gguf, lora)
    assert kl(merged, with_lora) < 1e-4
    assert kl(merged, bare) > 1e-3 and kl(merged, llama_logits(base_gguf, None)) > 1e-3

    v = report.validation
    assert v["loads"] and v["has_chat_template"] and "### Assistant:" in v["chat_template"]
    assert v["parity_ok"] and abs(v["perplexity_ratio"] - 1.0) < 0.01

    manifest = ExportManifest.read(Path(report.manifest_path).parent)
    assert manifest.kind == "adapter" and manifest.base.path == base_gguf.relative_to(home).as_posix()
    assert manifest.base.sha256 == fields["forge.base_gguf_sha256"].contents()
    assert manifest.lineage.forge_version and manifest.lineage.base_fingerprint
    assert read_last_export(home / "models", home)[0].sha256 == report.sha256

    # same adapter again: nothing is exported; a new adapter reuses the base GGUF without rebuilding it
    mtime = base_gguf.stat().st_mtime_ns
    assert export_model(adapter, home / "models", quant="f16", log=lambda m: None).status == "cached"
    # reused by the job (parity=False), the export leaves fidelity to the evaluation; reused by `forge export`
    # after that (parity=True), it measures the perplexity parity again instead of trusting the job's skip
    from forge_pipeline.export.validate import PARITY_BY_EVALUATION, parity_problems

    job = export_model(adapter, home / "models", quant="f16", eval_path=eval_path, parity=False, log=lambda m: None)
    assert job.status == "cached" and job.validation["parity_by"] == PARITY_BY_EVALUATION
    assert ExportManifest.read(Path(job.manifest_path).parent).validation["parity_by"] == PARITY_BY_EVALUATION
    cli = export_model(adapter, home / "models", quant="f16", eval_path=eval_path, log=lambda m: None)
    assert cli.status == "cached" and "parity_by" not in cli.validation and parity_problems(cli.validation) == []
    assert abs(cli.validation["perplexity_ratio"] - 1.0) < 0.01
    logs = []
    second = export_model(make_adapter(base, root / "adapter-b", seed=2), home / "models", quant="f16",
                          log=logs.append, validate=False)
    assert second.status == "exported" and second.base_gguf == str(base_gguf)
    assert base_gguf.stat().st_mtime_ns == mtime and not any("building the base GGUF" in m for m in logs)
    assert base_ggufs(home / "base_models") == [base_gguf]
    assert kl(merged_logits(base, root / "adapter-b"), llama_logits(base_gguf, Path(second.gguf_path))) < 1e-4


@pytest.mark.slow
def test_rslora_and_per_module_alpha_scale_like_peft(tiny, tmp_path):
    """llama.cpp scales by alpha/rank; PEFT's rsLoRA (alpha/sqrt(r)) and alpha_pattern are folded into B."""
    root, base, _ = tiny
    adapter = make_adapter(base, tmp_path / "rs", seed=3, use_rslora=True, alpha_pattern={"down_proj": 4})
    report = export_model(adapter, tmp_path / "home" / "models", quant="f16", validate=False, log=lambda m: None)
    assert kl(merged_logits(base, adapter), llama_logits(Path(report.base_gguf), Path(report.gguf_path))) < 1e-4


@pytest.mark.slow
def test_mismatched_adapter_is_refused(tiny, tmp_path, monkeypatch):
    """An adapter made for one base is refused on another of different shapes: by our header check (naming
    the tensors) and by llama.cpp itself."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.export.lora_gguf import adapter_base_problems

    root, base, _ = tiny
    report = export_model(make_adapter(base, tmp_path / "a", seed=4), tmp_path / "home" / "models", quant="f16",
                          validate=False, log=lambda m: None)
    wide = tmp_path / "wide"
    wide.mkdir()
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            (wide / f.name).write_bytes(f.read_bytes())
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0)).save_pretrained(wide)
    wide_gguf = convert_to_gguf(wide, tmp_path / "wide.gguf", "f16")

    # headers only: gguf.GGUFReader decodes the whole vocabulary (most of the 8B nightly's 7.6 s export)
    import gguf

    monkeypatch.setattr(gguf, "GGUFReader", None)
    problems = adapter_base_problems(Path(report.gguf_path), wide_gguf,
                                     hashlib.sha256(wide_gguf.read_bytes()).hexdigest())
    assert any("made for base sha256" in p for p in problems)
    assert any("input size 64 != base 96" in p for p in problems)
    # llama.cpp refuses it too; llama-cpp-python 0.3.36 would then run without the adapter, open_llama raises
    from forge_pipeline.export.validate import inspect_and_answer, open_llama

    with pytest.raises(ValueError, match="refused the LoRA adapter"):
        open_llama(wide_gguf, Path(report.gguf_path), n_ctx=64)
    probe = inspect_and_answer(wide_gguf, [[{"role": "user", "content": "hi"}]], lora=Path(report.gguf_path))
    assert not probe["loads"] and "refused the LoRA adapter" in probe["error"]
    open_llama(Path(report.base_gguf), Path(report.gguf_path), n_ctx=64).close()
    assert adapter_base_problems(Path(report.gguf_path), Path(report.base_gguf), report.base_sha256) == []


def test_adapters_llama_cpp_cannot_carry_are_refused_by_name(tiny, tmp_path):
    from safetensors.torch import save_file

    from forge_pipeline.export.lora_gguf import write_adapter_gguf

    _, base, _ = tiny
    import torch

    for extra, expect in (({"use_dora": True}, "DoRA"), ({}, "modules_to_save")):
        d = tmp_path / ("dora" if extra else "saved")
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 16, "r": 8,
                                                           "base_model_name_or_path": str(base), **extra}))
        save_file({"base_model.model.lm_head.modules_to_save.weight": torch.zeros(4, 4)},
                  str(d / "adapter_model.safetensors"))
        with pytest.raises(ExportError, match=expect):
            write_adapter_gguf(d, str(base), tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
