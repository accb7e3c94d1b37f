"""The `forge` console script, run as a user would, against the sample vault."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_pipeline.files import read_jsonl

FORGE = str(Path(sys.executable).with_name("forge"))


def forge(*args, home, stdin=None):
    return subprocess.run([FORGE, "--home", str(home), *args], capture_output=True, text=True, input=stdin, timeout=300)


def test_extract_curate_review_from_the_shell(forge_home):
    r = forge("extract", home=forge_home)
    assert r.returncode == 0, r.stderr
    assert "extracted" in r.stdout and "latin1 export.md" in r.stderr  # warnings name the file
    rows = read_jsonl(forge_home / "training_data" / "extracted.jsonl")
    r = forge("review", home=forge_home, stdin="r\nq\n")
    assert r.returncode == 0 and rows[0]["source_file"] in r.stdout
    r = forge("curate", home=forge_home)
    assert r.returncode == 0 and "rejected_in_review" in r.stdout


def test_extract_to_custom_output_and_bad_vault(forge_home, tmp_path, make_vault):
    vault = make_vault({"a.md": "## Reflection\nI realize the CLI takes a vault and an output path.\n"})
    r = forge("extract", "--vault", str(vault), "--output", str(tmp_path / "x.jsonl"), home=forge_home)
    assert r.returncode == 0 and len(read_jsonl(tmp_path / "x.jsonl")) == 1
    r = forge("extract", "--vault", str(tmp_path / "missing"), home=forge_home)
    assert r.returncode == 2 and "vault not found" in r.stderr and "Traceback" not in r.stderr


def test_data_commands_do_not_import_the_ml_stack(forge_home):
    code = ("import sys, forge_pipeline.cli as c; c.main(['extract']); "
            "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'dagster') if m in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_every_option_of_every_command_has_help_and_shows_its_default():
    """Issue 15: no option without help text; an option that takes a value shows its default or says what
    it is (device- and setting-dependent defaults are written out)."""
    import argparse

    from forge_pipeline.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for name, p in [("forge", parser), *sub.choices.items()]:
        formatter = p.formatter_class(prog=name)
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{label}: no help")
            elif action.option_strings and action.nargs != 0 and "default" not in formatter._get_help_string(action).lower():
                missing.append(f"{label}: default not shown")
    assert not missing, missing
    # the command list is not an option: no "(default: not set)" after each command's description
    assert "default: not set" not in parser.format_help(), parser.format_help()


def test_version_and_home_after_the_command(forge_home, tmp_path):
    r = subprocess.run([FORGE, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("forge ")
    other = tmp_path / "other_home"
    r = subprocess.run([FORGE, "status", "--json", "--home", str(other)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["forge_home"] == str(other)


def test_status_is_a_summary_with_json_for_scripts_and_survives_a_closed_pipe(forge_home):
    r = forge("extract", home=forge_home)
    assert r.returncode == 0, r.stderr
    human = forge("status", home=forge_home)
    assert human.returncode == 0, human.stderr
    assert "examples" in human.stdout and "extracted" in human.stdout and "next" in human.stdout
    assert "{" not in human.stdout  # a summary, not a JSON dump
    data = json.loads(forge("status", "--json", home=forge_home).stdout)
    assert data["examples"]["extracted"] == len(read_jsonl(forge_home / "training_data" / "extracted.jsonl"))
    assert data["examples"]["curated_train"] is None and data["next"].startswith("forge curate")
    assert data["serving"]["up"] is False
    reader, writer = os.pipe()
    os.close(reader)  # `forge status | head` where head has already gone
    closed = subprocess.run([FORGE, "--home", str(forge_home), "status"], stdout=writer, stderr=subprocess.PIPE,
                            text=True, timeout=120)
    os.close(writer)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr


@pytest.fixture
def two_models(tmp_path_factory):
    from forge_pipeline_tests.tiny_models import make_tiny_gguf

    work = tmp_path_factory.mktemp("cli_models")
    return [make_tiny_gguf(work / f"m{i}.gguf", seed=i + 1, work=work) for i in range(2)]


def _export(home: Path, src: Path, version: str) -> Path:
    """A merged export as the exporter leaves it: the file and a manifest whose validation passed."""
    from forge_pipeline.export.manifest import ExportManifest, SourceAdapter
    from forge_pipeline.files import sha256_file

    folder = home / "models" / version
    folder.mkdir(parents=True)
    shutil.copy2(src, folder / "companion-f16.gguf")
    ExportManifest(version=version, kind="merged", file="companion-f16.gguf", quantization="f16",
                   sha256=sha256_file(folder / "companion-f16.gguf"), size_mb=1.0,
                   source_adapter=SourceAdapter(path="training/final", fingerprint="f" * 16),
                   validation={"loads": True, "has_chat_template": True, "answers": ["a fine answer"],
                               "degenerate": [None], "perplexity_ratio": 1.0, "parity_ok": True},
                   created="2026-11-25T03:00:00Z").write(folder)
    return folder / "companion-f16.gguf"


@pytest.mark.slow
def test_serve_without_model_serves_the_newest_validated_export_then_rollback(forge_home, two_models):
    """`forge serve` with no --model says which model it serves (the newest validated export before any
    deploy); `forge rollback` goes back to the previous model through serving's admin API."""
    import httpx

    from forge_pipeline.files import sha256_file
    from forge_pipeline_tests.helpers import free_port

    older = _export(forge_home, two_models[0], "20261124-030000-aaaaaaaa")
    newer = _export(forge_home, two_models[1], "20261125-030000-bbbbbbbb")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FORGE_HOME": str(forge_home), "FORGE_SERVING_URL": url, "FORGE_N_CTX": "512"}
    env.pop("FORGE_ADMIN_TOKEN", None)
    proc = subprocess.Popen([FORGE, "serve"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        status = httpx.get(url + "/admin/model-status", timeout=30).json()
        assert status["sha256"] == sha256_file(newer)
        reload = httpx.post(url + "/admin/reload-model", json={"model_path": str(older)}, timeout=300)
        assert reload.status_code == 200, reload.text
        r = subprocess.run([FORGE, "rollback"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "rolled back" in r.stdout, r.stderr
        assert httpx.get(url + "/admin/model-status", timeout=30).json()["sha256"] == sha256_file(newer)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "newest validated export 20261125-030000-bbbbbbbb" in err


def test_an_export_that_left_fidelity_to_the_gate_is_served_only_once_the_gate_passed_it(tmp_path):
    """The job's adapter exports skip the perplexity comparison (the evaluation's KLD checks fidelity), so
    `forge serve` / `forge up` pick one only with the gate's passing decision; a refused one never."""
    import json

    from forge_pipeline.cli.models_on_disk import newest_validated
    from forge_pipeline.config import load_config
    from forge_pipeline.export.manifest import ExportManifest
    from forge_pipeline.export.validate import PARITY_BY_EVALUATION
    from forge_pipeline.files import sha256_file

    home = tmp_path / "home"
    for i, name in enumerate(("m0.gguf", "m1.gguf")):
        (tmp_path / name).write_bytes(b"GGUF" + bytes([i]) * 64)
    _export(home, tmp_path / "m0.gguf", "20261124-030000-aaaaaaaa")  # measured parity, as before
    newer = _export(home, tmp_path / "m1.gguf", "20261125-030000-bbbbbbbb")
    manifest = ExportManifest.read(newer.parent)
    manifest.validation = {k: v for k, v in manifest.validation.items() if k not in ("perplexity_ratio", "parity_ok")}
    manifest.validation["parity_by"] = PARITY_BY_EVALUATION
    manifest.write(newer.parent)
    settings = load_config(home=home)
    assert newest_validated(settings)[2] == "20261124-030000-aaaaaaaa"  # nothing judged the newer one yet

    def decide(deploy: bool, key: str):
        folder = settings.evaluation_dir / key
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"models": {"candidate": {"gguf": str(newer),
                                                                                 "identity": sha256_file(newer)}}}))
        (folder / "decision.json").write_text(json.dumps({"deploy": deploy, "reasons": []}))

    decide(True, "k1")
    assert newest_validated(settings)[2] == "20261125-030000-bbbbbbbb"
    decide(False, "k2")  # refused by a later evaluation: never served
    assert newest_validated(settings)[2] == "20261124-030000-aaaaaaaa"
