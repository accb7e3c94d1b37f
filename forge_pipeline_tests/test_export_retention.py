"""Disk stays bounded: pruning keeps the newest N versions plus serving's live model and rollback target (read
from serving's own deployment record), never guesses when that record is unreadable; an export without the
disk space it needs fails before doing any work, with the numbers."""
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from forge_pipeline.export.manifest import BaseGGUFRef, ExportManifest, LastExport, SourceAdapter
from forge_pipeline.export.retention import InsufficientSpaceError, prune_versions
from serving.deployments import DeploymentHistory


def make_version(models: Path, home: Path, i: int, kind: str = "adapter", base: Path | None = None) -> Path:
    version = f"2026110{i}-030000-{i:08x}"
    folder = models / version
    folder.mkdir(parents=True)
    name = f"adapter-companion-{i:08x}.gguf" if kind == "adapter" else "companion-q4_k_m.gguf"
    (folder / name).write_bytes(b"x" * 1024)
    ref = BaseGGUFRef(path=base.relative_to(home).as_posix(), sha256="b" * 64, quantization="q4_k_m",
                      base_fingerprint="fp", size_mb=0.0) if base else None
    ExportManifest(version=version, kind=kind, file=name, quantization="q4_k_m", sha256="a" * 64, size_mb=0.001,
                   base=ref, source_adapter=SourceAdapter(path="training/final", fingerprint=f"{i:08x}"),
                   created=f"2026-11-0{i}T03:00:00Z").write(folder)
    return folder / name


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def test_retention_never_removes_the_live_or_rollback_file(home):
    models = home / "models"
    base = home / "base_models" / "gguf" / "abc" / "base-q4_k_m-12345678.gguf"
    old_base = home / "base_models" / "gguf" / "old" / "base-q4_k_m-00000000.gguf"
    for b in (base, old_base):
        b.parent.mkdir(parents=True)
        b.write_bytes(b"base")
    files = [make_version(models, home, i, base=base) for i in range(1, 9)]
    # serving runs version 2 (an adapter on the base) and would roll back to version 1 (a merged file),
    # recorded by serving's own DeploymentHistory, paths relative to FORGE_HOME
    history = DeploymentHistory(home / "serving" / "deployments.json", home)
    history.record({"kind": "full", "path": str(files[0])}, None, "reload")
    history.record({"kind": "adapter", "path": str(files[1]), "base_path": str(base)},
                   {"kind": "full", "path": str(files[0])}, "reload")
    assert "models/" in (home / "serving" / "deployments.json").read_text()  # stored relative: resolved by us
    LastExport(manifest=f"models/{files[-1].parent.name}/manifest.json", status="exported").write(models)

    report = prune_versions(models, home, keep=3, serving_dir=home / "serving", base_models_dir=home / "base_models")

    remaining = sorted(p.name for p in models.iterdir() if p.is_dir())
    assert remaining == sorted([files[0].parent.name, files[1].parent.name] + [f.parent.name for f in files[-3:]])
    assert files[0].exists() and files[1].exists() and base.exists()
    assert set(report.protected) == {files[0].parent.name, files[1].parent.name}
    assert len(report.removed) == 4 and not old_base.exists()  # 3 versions + the base no version uses
    # a dry run of the same pruning removes nothing and names nothing more
    assert prune_versions(models, home, keep=3, serving_dir=home / "serving", dry_run=True).removed == []


def test_protected_paths_and_pointer_are_kept_and_keep_must_be_positive(home):
    models = home / "models"
    files = [make_version(models, home, i, kind="merged") for i in range(1, 5)]
    LastExport(manifest=f"models/{files[0].parent.name}/manifest.json", status="cached").write(models)
    report = prune_versions(models, home, keep=1, protected=[files[1]])
    assert sorted(report.kept) == sorted([files[0].parent.name, files[1].parent.name, files[3].parent.name])
    with pytest.raises(ValueError, match="at least 1"):
        prune_versions(models, home, keep=0)


def test_unreadable_deployment_record_stops_pruning(home):
    models = home / "models"
    files = [make_version(models, home, i) for i in range(1, 5)]
    (home / "serving").mkdir(parents=True)
    (home / "serving" / "deployments.json").write_text('{"current": {"path": ')  # torn write
    report = prune_versions(models, home, keep=1, serving_dir=home / "serving")
    assert report.removed == [] and "unreadable" in report.skipped
    assert all(f.exists() for f in files)


def test_export_fails_early_when_the_disk_is_too_small(home, tmp_path, monkeypatch):
    """Checked before any merge, conversion or write: the message gives needed vs free."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    base = tmp_path / "base"  # only a config: the space estimate needs no weights
    LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8).save_pretrained(base)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32,
                                                              "base_model_name_or_path": str(base)}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(16, 4096)},
              str(adapter / "adapter_model.safetensors"))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(100 * 2**30, 99 * 2**30, 2**30))

    from forge_pipeline.export.pipeline import export_model

    for merged, at_least in ((False, 15), (True, 30)):  # 8B: base f16 + q4_k_m once; merged adds a 16-bit copy
        with pytest.raises(InsufficientSpaceError) as e:
            export_model(adapter, home / "models", merged=merged, log=lambda m: None)
        needed = float(str(e.value).split("about ")[1].split(" GiB")[0])
        assert needed > at_least and "only 1.00 GiB are free" in str(e.value)
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert not (home / "base_models").exists()


def test_forge_models_lists_and_prunes(home, capsys):
    from forge_pipeline.cli import main
    from forge_pipeline.files import atomic_write_json, sha256_text

    models = home / "models"
    files = [make_version(models, home, i, kind="merged") for i in range(1, 5)]
    history = DeploymentHistory(home / "serving" / "deployments.json", home)
    history.record({"kind": "full", "path": str(files[1])}, {"kind": "full", "path": str(files[0])}, "reload")
    # the quality gate's decision for version 4, stored where evaluation stores it (key: sha256 of the identity)
    atomic_write_json(home / "evaluation" / sha256_text("a" * 64)[:16] / "decision.json",
                      {"deploy": False, "reasons": ["eval loss 2.1 is 5% above the live model's 2.0"]})

    assert main(["--home", str(home), "models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["versions"]
    assert [r["version"] for r in listed] == [f.parent.name for f in reversed(files)]  # newest first
    assert {r["version"]: r["serving"] for r in listed}[files[1].parent.name] == "live"
    assert {r["version"]: r["serving"] for r in listed}[files[0].parent.name] == "previous"
    assert all(r["gate"] == "blocked" and "5% above" in r["gate_reasons"][0] for r in listed)  # same sha256 here
    assert main(["--home", str(home), "models"]) == 0
    assert "gate: eval loss 2.1" in capsys.readouterr().out

    assert main(["--home", str(home), "models", "prune", "--keep", "1", "--dry-run"]) == 0
    assert "would remove 1" in capsys.readouterr().out and files[2].exists()
    assert main(["--home", str(home), "models", "prune", "--keep", "1"]) == 0
    assert sorted(p.parent.name for p in files if p.exists()) == sorted(f.parent.name for f in (files[0], files[1], files[3]))
