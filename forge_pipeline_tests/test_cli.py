"""The `forge` console script, run as a user would, against the sample vault."""
import subprocess
import sys
from pathlib import Path

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
