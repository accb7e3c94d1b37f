"""Export and validation with a tiny real Llama (random weights, SentencePiece tokenizer); training tests are in
test_training.py."""
import json
import subprocess
import sys
from pathlib import Path

from forge_pipeline.export.manifest import ExportManifest, read_last_export
from forge_pipeline.export.modelfile import parse_modelfile, render_go, render_jinja
from forge_pipeline.export.pipeline import export_model
from forge_pipeline.export.validate import degeneracy, parity_ok
from forge_pipeline.training.checkpoints import checkpoints
from forge_pipeline.training.trainer import run_training
from forge_pipeline_tests.helpers import tiny_cfg  # fixtures tiny_base and curated: conftest.py
from forge_pipeline_tests.tiny_models import make_tiny_llama


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

    exp = export_model(final, c.models_dir, quant="f16", eval_path=c.eval_path, merged=True,
                       system_prompt="You are a thoughtful, reflective companion.")
    gguf = Path(exp.gguf_path)
    assert gguf.exists() and gguf.parent.parent == c.models_dir and gguf.name == "companion-f16.gguf"
    v = exp.validation
    assert v["loads"] and v["has_chat_template"] and "### Assistant:" in v["chat_template"]
    assert v["parity_ok"] and abs(v["perplexity_ratio"] - 1.0) < 0.01
    assert read_last_export(c.models_dir, c.home_dir)[0].sha256 == exp.sha256
    # the Ollama Modelfile beside it: FROM the GGUF, its template in Go syntax, stops, the system prompt
    parsed = parse_modelfile(Path(exp.modelfile).read_text())
    assert ("FROM", "./companion-f16.gguf") in parsed and v["modelfile"]["family"] == "plain"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "What did I learn?"}]
    assert render_go(dict(parsed)["TEMPLATE"], msgs) == render_jinja(v["chat_template"], msgs, "<s>", "</s>")[3:]
    assert ("PARAMETER", "stop </s>") in parsed and ("PARAMETER", "stop ### User:") in parsed

    # the nightly kind: an adapter GGUF on the base GGUF, validated as served (base + adapter in llama.cpp)
    adapter = export_model(final, c.models_dir, quant="f16", eval_path=c.eval_path)
    assert adapter.kind == "adapter" and Path(adapter.gguf_path).name.startswith("adapter-companion-")
    assert adapter.validation["loads"] and adapter.validation["parity_ok"]
    assert abs(adapter.validation["perplexity_ratio"] - 1.0) < 0.01
    # f16 copies of the float32 LoRA matrices: about half the PEFT file, whatever the base's size
    assert Path(adapter.gguf_path).stat().st_size < 0.6 * (final / "adapter_model.safetensors").stat().st_size
    assert ExportManifest.read(Path(adapter.manifest_path).parent).lineage.data_sha256 == manifest["data"]["train_sha256"]

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
    assert export_model(final, c.models_dir, quant="f16", eval_path=c.eval_path, merged=True).status == "cached"
    # a changed hyperparameter trains again
    assert run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base, lora_rank=8), eval_path=c.eval_path,
                        home=c.home_dir).status == "trained"


def test_padded_embedding_survives_merge_and_gguf(curated, tmp_path):
    """An embedding with more rows than the tokenizer has tokens (vocabularies padded for speed) must still
    give a GGUF llama.cpp loads: the converter pads the vocabulary only from the base's tokenizer.model."""
    c = curated
    base = make_tiny_llama(tmp_path / "padded", vocab_size=512)
    report = run_training(c.curated_path, tmp_path / "training", tiny_cfg(base, max_steps=1, eval_steps=None),
                          home=c.home_dir)
    from gguf import GGUFReader

    for merged in (True, False):  # the merged GGUF, and the base GGUF an adapter is served on
        exp = export_model(Path(report.final_dir), tmp_path / "models", quant="f16", eval_path=c.eval_path,
                           merged=merged)
        assert exp.validation["loads"] and exp.validation["parity_ok"], exp.validation.get("load_error")
        tokens = GGUFReader(exp.gguf_path if merged else exp.base_gguf).fields["tokenizer.ggml.tokens"]
        assert len(tokens.data) == 512


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
    # training_summary's closing lines: what was made and where, then how (backend, steps), then the numbers
    assert "\nadapter trained: " in r.stdout and "\n  backend transformers, 2 steps" in r.stdout, r.stdout
    assert "\nstep 2/2, loss " in r.stdout  # the trainer's progress lines reached its last step
    r = subprocess.run([forge, "--home", home, "export", "--merged", "--quant", "f16"], capture_output=True,
                       text=True, timeout=600)
    assert "companion-f16.gguf" in r.stdout and "ollama create companion -f Modelfile" in r.stdout
    assert "export: 100%" in r.stderr and "4/4" in r.stderr and "validate" in r.stderr  # stage progress bar
    # the tiny random model loops ("p p p"), so validation names the degenerate answers and the exit code says so
    assert r.returncode == 1 and "validation: answer 1: repeats" in r.stderr
    status = json.loads(subprocess.run([forge, "--home", home, "status", "--json"], capture_output=True, text=True, timeout=120).stdout)
    assert status["model"]["quantization"] == "f16" and status["adapter"]["backend"] == "transformers"
    assert status["serving"]["up"] is False and status["model"]["kind"] == "merged"
    # the default: an adapter GGUF, on a base GGUF whose quantization export chooses itself (q4_k_m here)
    r = subprocess.run([forge, "--home", home, "export"], capture_output=True, text=True, timeout=600)
    assert "adapter-companion-" in r.stdout and "q4_k_m" in r.stdout and "3/3" in r.stderr, r.stdout + r.stderr
