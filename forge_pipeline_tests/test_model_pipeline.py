"""Training, export and validation with a tiny real Llama (random weights, SentencePiece tokenizer)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_pipeline.curation.curate import curate
from forge_pipeline.export.export import export_model, last_export
from forge_pipeline.export.validate import degeneracy, parity_ok
from forge_pipeline.extraction.extractor import extract_training_data
from forge_pipeline.training.base_model import BaseModelError, resolve_base_model
from forge_pipeline.training.checkpoints import checkpoints
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.trainer import NonFiniteLossError, TrainingError, run_training, run_with_oom_backoff
from forge_pipeline_tests.tiny_models import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture
def curated(config):
    extract_training_data(config=config)
    curate(config)
    return config


def tiny_cfg(base, **kw) -> TrainingConfig:
    return TrainingConfig(**{"base_model": str(base), "max_steps": 4, "batch_size": 4, "gradient_accumulation_steps": 1,
                             "max_seq_length": 384, "logging_steps": 1, "save_steps": 2, "eval_steps": 2,
                             "learning_rate": 5e-3, **kw})


def test_tiny_end_to_end_train_merge_gguf_generate(curated, tiny_base):
    c = curated
    report = run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base), eval_path=c.eval_path, home=c.home_dir)
    final = Path(report.final_dir)
    manifest = json.loads((final / "manifest.json").read_text())
    assert report.status == "trained" and report.backend == "transformers"
    assert (final / "adapter_model.safetensors").exists() and (final / "loss_curve.png").stat().st_size > 1000
    assert "### Assistant:" in (final / "chat_template.jinja").read_text()  # documented default template
    assert manifest["data"]["train_sha256"] and manifest["data"]["train_examples"] == len(c.curated_path.read_text().splitlines())
    assert manifest["hyperparameters"]["lora_rank"] == 16 and manifest["metrics"]["global_step"] == 4
    assert manifest["metrics"]["eval_loss"] < manifest["metrics"]["base_eval_loss"]
    assert any("loss" in h for h in manifest["log_history"]) and manifest["versions"]["transformers"]
    assert checkpoints(c.training_dir) == []  # cleaned after publishing

    exp = export_model(final, c.models_dir, quant="f16", eval_path=c.eval_path)
    gguf = Path(exp.gguf_path)
    assert gguf.exists() and gguf.parent.parent == c.models_dir and gguf.name == "companion-f16.gguf"
    v = exp.validation
    assert v["loads"] and v["has_chat_template"] and "### Assistant:" in v["chat_template"]
    assert v["parity_ok"] and abs(v["perplexity_ratio"] - 1.0) < 0.01
    assert last_export(c.models_dir)["sha256"] == exp.sha256

    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=256, verbose=False)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "What did I learn?"}], max_tokens=8,
                                     temperature=0.0)
    llm.close()
    assert out["usage"]["completion_tokens"] >= 1

    # unchanged data, config and base: nothing is trained or exported again
    again = run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base), eval_path=c.eval_path, home=c.home_dir)
    assert again.status == "cached" and again.fingerprint == report.fingerprint
    assert export_model(final, c.models_dir, quant="f16", eval_path=c.eval_path).status == "cached"
    # a changed hyperparameter trains again
    assert run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base, lora_rank=8), eval_path=c.eval_path,
                        home=c.home_dir).status == "trained"


def test_packing_fills_rows_with_whole_examples(curated, tiny_base, tmp_path):
    c = curated
    runs = {packing: run_training(c.curated_path, tmp_path / f"packing-{packing}", tiny_cfg(tiny_base, packing=packing,
                                  max_steps=2, max_seq_length=1024, eval_steps=None, save_steps=100), home=c.home_dir).metrics
            for packing in (False, True)}
    assert runs[True]["batch_layout"] == "packed (bfd)" and runs[False]["batch_layout"] == "padded"
    assert runs[True]["global_step"] == runs[False]["global_step"] == 2
    # the same steps carry several examples per row once packed (sample-vault examples are far below 1024 tokens)
    assert runs[True]["tokens_seen"] > 1.5 * runs[False]["tokens_seen"] > 0
    assert all(r["train_loss"] == r["train_loss"] for r in runs.values())  # not NaN


def test_padded_embedding_survives_merge_and_gguf(curated, tmp_path):
    """An embedding with more rows than the tokenizer has tokens (vocabularies padded for speed) must still
    give a GGUF llama.cpp loads: the converter pads the vocabulary only from the base's tokenizer.model."""
    c = curated
    base = make_tiny_llama(tmp_path / "padded", vocab_size=512)
    report = run_training(c.curated_path, tmp_path / "training", tiny_cfg(base, max_steps=1, eval_steps=None),
                          home=c.home_dir)
    exp = export_model(Path(report.final_dir), tmp_path / "models", quant="f16", eval_path=c.eval_path)
    assert exp.validation["loads"] and exp.validation["parity_ok"], exp.validation.get("load_error")
    from gguf import GGUFReader

    tokens = GGUFReader(exp.gguf_path).fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 512


def test_kill_mid_run_then_resume(curated, tiny_base, tmp_path):
    c = curated
    cfg = tiny_cfg(tiny_base, max_steps=40, save_steps=2, eval_steps=100)
    script = (f"from forge_pipeline.training.trainer import run_training\n"
              f"from forge_pipeline.training.config import TrainingConfig\n"
              f"run_training({str(c.curated_path)!r}, {str(c.training_dir)!r}, "
              f"TrainingConfig.model_validate_json({cfg.model_dump_json()!r}), home={str(c.home_dir)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(checkpoints(c.training_dir)) < 1:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = checkpoints(c.training_dir)
    assert done, "the trainer wrote no checkpoint before it was killed"
    last_step = max(int(p.name.split("-")[1]) for p in done)
    truncated = c.training_dir / f"checkpoint-{last_step + 1000}"
    truncated.mkdir()
    (truncated / "adapter_model.safetensors").write_bytes(b"\x10\x00")  # a save cut off mid-write
    logs = []
    report = run_training(c.curated_path, c.training_dir, cfg, home=c.home_dir, log=logs.append)
    assert any("skipping truncated checkpoint" in m for m in logs), logs
    assert any(m.startswith("resuming from checkpoint-") for m in logs)
    assert report.status == "resumed" and report.metrics["global_step"] == 40
    assert not truncated.exists()


def test_nan_loss_stops_and_publishes_nothing(curated, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    broken = make_tiny_llama(tmp_path / "broken", seed=3)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")  # a corrupted base: every loss is NaN
    model.save_pretrained(broken)
    c = curated
    with pytest.raises(NonFiniteLossError, match="no adapter was published"):
        run_training(c.curated_path, c.training_dir, tiny_cfg(broken, eval_steps=100), home=c.home_dir)
    assert not (c.training_dir / "final").exists()


def test_too_few_examples_fails_before_loading_a_model(forge_home, tmp_path):
    data = tmp_path / "few.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    with pytest.raises(TrainingError, match="1 training examples, need at least 10"):
        run_training(data, tmp_path / "training", TrainingConfig(base_model="/nonexistent/model"))


def test_oom_backoff_keeps_the_effective_batch():
    import torch

    seen = []

    def run(batch, accum):
        seen.append((batch, accum))
        if batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert run_with_oom_backoff(run, 4, 4, log=lambda m: None) == "ok"
    assert seen == [(4, 4), (2, 8), (1, 16)]

    def always(batch, accum):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(TrainingError, match="lower max_seq_length"):
        run_with_oom_backoff(always, 2, 1, log=lambda m: None)
    with pytest.raises(ValueError):  # other errors are not retried
        run_with_oom_backoff(lambda b, a: (_ for _ in ()).throw(ValueError("bad")), 4, 1)


def test_offline_hub_id_is_a_clear_error(forge_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="hub cannot be reached.*local directory or a .gguf file"):
        resolve_base_model("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", forge_home)


def test_base_model_paths(forge_home, tmp_path):
    with pytest.raises(BaseModelError, match="not found"):
        resolve_base_model(str(tmp_path / "missing.gguf"), forge_home)
    (tmp_path / "hfdir").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base_model(str(tmp_path / "hfdir"), forge_home)


def test_validation_rules():
    assert degeneracy("") == "empty answer"
    assert degeneracy("I think " * 20).startswith("repeats")
    assert degeneracy("Looking back, the hardest conversations were also the ones that fixed the most.") is None
    assert parity_ok(1.05, 1.0, "q4_k_m") == (True, 1.05, 1.10)
    assert parity_ok(1.05, 1.0, "q8_0")[0] is False


def test_forge_train_export_status_from_the_shell(curated, tiny_base):
    forge = str(Path(sys.executable).with_name("forge"))
    home = str(curated.home_dir)
    r = subprocess.run([forge, "--home", home, "train", "--base-model", str(tiny_base), "--max-steps", "2",
                        "--lr", "0.005"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\ntrained: " in r.stdout and "(backend transformers" in r.stdout
    assert "2/2" in r.stderr  # the trainer's progress bar reached its last step
    r = subprocess.run([forge, "--home", home, "export", "--quant", "f16"], capture_output=True, text=True, timeout=600)
    assert "companion-f16.gguf" in r.stdout
    assert "export: 100%" in r.stderr and "4/4" in r.stderr and "validate" in r.stderr  # stage progress bar
    # the tiny random model loops ("p p p"), so validation names the degenerate answers and the exit code says so
    assert r.returncode == 1 and "validation: answer 1: repeats" in r.stderr
    status = json.loads(subprocess.run([forge, "--home", home, "status"], capture_output=True, text=True, timeout=120).stdout)
    assert status["model"]["quantization"] == "f16" and status["adapter"]["backend"] == "transformers"
    assert status["serving"]["serving"] == "down"
