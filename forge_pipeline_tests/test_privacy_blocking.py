"""The command line runs the same blocking checks as Dagster before training (issues 11.7 and 12):
`forge curate` prints them and exits non-zero when one fails; `forge train` refuses to start on such data."""
import json
import shutil
from collections import Counter

import pytest

from forge_pipeline.cli import main as forge_main
from forge_pipeline.config import load_config
from forge_pipeline.curation.validators import check_curated_set, curated_set_problems
from forge_pipeline.extraction import note as note_module
from forge_pipeline.files import read_jsonl, write_jsonl
from forge_pipeline_tests.test_privacy_check import _vault

SECRET = "hunter2-canary"


@pytest.fixture
def vault_home(tmp_path, monkeypatch):
    vault = _vault(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.setenv("FORGE_VAULT", str(vault))
    monkeypatch.setenv("FORGE_MIN_CURATED_EXAMPLES", "1")
    return home


def test_forge_curate_prints_the_checks_and_fails_on_a_redactor_miss(vault_home, monkeypatch, capsys):
    assert forge_main(["extract"]) == 0
    assert forge_main(["curate"]) == 0
    out = capsys.readouterr().out
    for name in ("curated_jsonl_schema", "minimum_curated_examples", "no_personal_data_in_curated",
                 "train_eval_disjoint"):
        assert f"check {name}: passed" in out, out

    monkeypatch.setattr(note_module, "redact", lambda text, *a, **k: (text, Counter()))  # the redactor misses all
    shutil.rmtree(load_config().cache_dir)  # the cache would serve the redacted results
    assert forge_main(["extract"]) == 0
    rc = forge_main(["curate"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "check no_personal_data_in_curated: FAILED" in captured.out and "IBAN" in captured.out
    assert "training is blocked" in captured.err
    assert "hunter2" not in captured.out + captured.err  # the report names kinds, never values


def test_forge_train_refuses_data_that_fails_a_blocking_check(vault_home, capsys):
    assert forge_main(["extract"]) == 0 and forge_main(["curate"]) == 0
    config = load_config()
    rows = read_jsonl(config.curated_path)
    rows[0]["messages"][-1]["content"] += f" password: {SECRET}"  # edited after curation, or a redactor miss
    write_jsonl(config.curated_path, rows)
    capsys.readouterr()
    rc = forge_main(["train", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "no_personal_data_in_curated" in err and "KEYWORD_LINE" in err and "training not started" in err
    assert SECRET not in err
    assert not config.training_dir.exists()  # nothing was loaded or written


def test_forge_train_refuses_too_few_examples_and_overlap(vault_home, monkeypatch, capsys):
    assert forge_main(["extract"]) == 0 and forge_main(["curate"]) == 0
    config = load_config()
    train = read_jsonl(config.curated_path)
    write_jsonl(config.eval_path, train[:1])  # the same example in both splits
    monkeypatch.setenv("FORGE_MIN_CURATED_EXAMPLES", "500")
    capsys.readouterr()
    assert forge_main(["train"]) == 2
    err = capsys.readouterr().err
    assert "minimum_curated_examples" in err and "train_eval_disjoint" in err, err
    # WARN severity: the minimum no longer blocks, the overlap still does
    monkeypatch.setenv("FORGE_MIN_EXAMPLES_SEVERITY", "WARN")
    problems = curated_set_problems(load_config())
    assert problems and all(p.startswith("train_eval_disjoint") for p in problems), problems


def test_a_custom_training_file_is_checked_too(tmp_path, forge_home):
    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{not json\n")
    report = check_curated_set(load_config(), bad)
    assert not report.ok and report.eval_path is None
    text = "\n".join(report.problems())
    assert "not valid JSON" in text and ":2:" in text
    missing = check_curated_set(load_config(), tmp_path / "absent.jsonl")
    assert "training data not found" in "\n".join(missing.problems())


def test_the_dagster_checks_run_the_same_functions(vault_home):
    """Dagster's asset checks and the CLI report agree on the same data (one implementation)."""
    from forge_pipeline.defs import data_checks
    from forge_pipeline.orchestration.resources import ForgeSettingsResource

    assert forge_main(["extract"]) == 0 and forge_main(["curate"]) == 0
    config = load_config()
    rows = read_jsonl(config.curated_path)
    rows[0]["source_file"] = "Inbox/mail maya.lee@example.org.md"
    write_jsonl(config.curated_path, rows)
    report = {o.name: o for o in check_curated_set(config).outcomes}
    resource = ForgeSettingsResource(home=str(vault_home))
    for check in data_checks.DATA_CHECKS[1:]:
        name = check.check_specs_by_output_name[next(iter(check.check_specs_by_output_name))].name
        result = check(forge=resource)
        assert result.passed == report[name].passed, name
        assert result.metadata["problems"].value == len(report[name].problems) or name == "minimum_curated_examples"
    assert not report["no_personal_data_in_curated"].passed
