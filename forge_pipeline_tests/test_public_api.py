"""The public names users' scripts call keep working, one test each: train, merge_only, reload_model,
get_model_status, TrainingDataExtractor, extract_training_data."""
import json
import socket
from pathlib import Path

import pytest

from forge_pipeline.extraction.extractor import TrainingDataExtractor, extract_training_data
from forge_pipeline_tests.tiny_models import make_tiny_llama


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


@pytest.fixture
def no_server(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("FORGE_SERVE_PORT", str(port))
    monkeypatch.setenv("FORGE_SERVING_URL", f"http://127.0.0.1:{port}")


def test_extract_training_data_writes_examples(config, tmp_path):
    out = tmp_path / "extracted.jsonl"
    extract_training_data(config.vault_dir, out, config=config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > 10 and all(r["messages"][-1]["role"] == "assistant" for r in rows)


def test_training_data_extractor_extracts_and_saves(config, tmp_path):
    ex = TrainingDataExtractor(config)
    examples = ex.extract()
    saved = ex.save_to_jsonl(tmp_path / "out.jsonl")
    assert examples and len(saved.read_text().splitlines()) == len(examples)


def test_get_model_status_without_a_server_says_down(config, no_server):
    from forge_pipeline.reload import get_model_status

    assert get_model_status(config)["serving"] == "down"


def test_reload_model_without_a_server_is_a_clear_error(config, no_server, tmp_path):
    from forge_pipeline.reload import reload_model

    with pytest.raises(RuntimeError, match="(?i)serving|reach|connect"):
        reload_model(config, tmp_path / "model.gguf")


@pytest.mark.slow
def test_train_then_merge_only(config, tmp_path):
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.export.merge import merge_only
    from forge_pipeline.training.trainer import train

    extract_training_data(config=config)
    curate(config)
    base = make_tiny_llama(tmp_path / "tiny")
    final = train(config.curated_path, tmp_path / "training", base_model=str(base), batch_size=4,
                  gradient_accumulation_steps=1, max_steps=1, max_seq_length=256, home=config.home_dir,
                  log=lambda m: None)
    assert final == tmp_path / "training" / "final" and (final / "adapter_model.safetensors").exists()
    merged = merge_only(final, tmp_path / "merged", dtype="float16")
    assert (Path(merged) / "config.json").exists() and any(Path(merged).glob("*.safetensors"))
    with pytest.raises(ValueError, match="learning_rate"):  # validated like every entry point
        train(config.curated_path, tmp_path / "bad", base_model=str(base), learning_rate=-1)
