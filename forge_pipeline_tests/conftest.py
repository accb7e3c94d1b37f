import hashlib
import os
from pathlib import Path

import pytest

from forge_pipeline.config import SAMPLE_VAULT, ForgeSettings, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture
def forge_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "forge_home"
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.delenv("FORGE_VAULT", raising=False)
    return home


@pytest.fixture
def config(forge_home) -> ForgeSettings:
    return load_config()


def write_vault(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def make_vault(tmp_path):
    def make(files: dict[str, str | bytes], name: str = "vault") -> Path:
        return write_vault(tmp_path / name, files)
    return make


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (links as their target text) -> sha256, plus mtimes: proves nothing was touched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mtime_ns}"
    return out


@pytest.fixture(scope="session")
def sample_vault() -> Path:
    return SAMPLE_VAULT


# Modules whose every test trains or loads a real model, or starts real servers and Dagster processes
# (measured: each test of them takes seconds to minutes on 2 cores). They get the `slow` marker here, so
# `pytest -m "not slow"` is the quick loop; the default run still runs them all.
SLOW_MODULES = {
    "test_end_to_end", "test_web_ui", "test_up", "test_serving", "test_serving_reliability", "test_serving_adapters",
    "test_model_pipeline", "test_evaluation_gate", "test_export_adapter", "test_export_retention",
    "test_orchestration", "test_instance_config", "test_training", "test_privacy_canary", "test_public_api",
    "test_user_turns",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# Shared by the training and export tests: a tiny real Llama per module, and the sample vault extracted and curated.
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture
def curated(config):
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.extraction.extractor import extract_training_data

    extract_training_data(config=config)
    curate(config)
    return config


# Shared by the serving tests (test_serving, test_serving_reliability): two tiny real GGUFs per module, and a
# FORGE_HOME holding each as its own version (models/v-a/companion-a.gguf, models/v-b/companion-b.gguf).
@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict:
    from forge_pipeline_tests.helpers import two_tiny_ggufs

    return two_tiny_ggufs(tmp_path_factory.mktemp("ggufs"))


@pytest.fixture
def models_home(tmp_path, ggufs) -> Path:
    from forge_pipeline_tests.helpers import home_with_models

    return home_with_models(tmp_path / "home", ggufs)
