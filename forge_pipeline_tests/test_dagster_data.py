"""Definitions load; the data assets and their checks materialize for real; a failing check blocks."""
import subprocess
import sys

from dagster import materialize

from forge_pipeline.defs import data_assets, data_checks
from forge_pipeline.files import read_jsonl
from forge_pipeline.orchestration.resources import ForgeSettingsResource
from forge_pipeline_tests.conftest import REPO_ROOT, tree_digest

DATA = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples, *data_checks.DATA_CHECKS]


def test_definitions_load():
    from forge_pipeline.definitions import defs

    repo = defs().get_repository_def()
    names = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"vault_notes", "extracted_examples", "curated_examples"} <= names
    assert "forge_job" in {j.name for j in repo.get_all_jobs()}


def test_definitions_load_through_dagster_cli():
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "forge_pipeline"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_data_assets_materialize_with_checks(config, sample_vault):
    before = tree_digest(sample_vault)
    result = materialize(DATA, resources={"forge": ForgeSettingsResource()})
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {c: True for c in ["extracted_jsonl_schema", "curated_jsonl_schema", "minimum_curated_examples",
                                        "no_personal_data_in_curated", "train_eval_disjoint"]}
    md = result.asset_materializations_for_node("curated_examples")[0].metadata
    assert md["train_examples"].value == len(read_jsonl(config.curated_path))
    assert "near_duplicate" in md["dropped_by_reason"].value
    assert "| tag |" in md["by_tag"].value
    # the UI: headline numbers first, typed; tables, not JSON blobs; a preview across folders, journal first
    assert list(md)[:2] == ["train_examples", "eval_examples"] and isinstance(md["train_examples"].value, int)
    rows = [line.split(" | ")[0].lstrip("| ") for line in md["preview"].value.splitlines()[2:]]
    assert rows[0].startswith("Journal/") and len({r.split("/")[0] for r in rows}) >= 3, rows
    assert "| near_duplicate |" in md["dropped_by_reason"].value
    ex = result.asset_materializations_for_node("extracted_examples")[0].metadata
    assert list(ex)[0] == "examples"
    assert any(f"| {kind} |" in ex["by_kind"].value for kind in ("section", "pattern", "tag"))
    inv = result.asset_materializations_for_node("vault_notes")[0].metadata
    assert inv["notes"].value >= 60
    assert tree_digest(sample_vault) == before


def test_minimum_examples_check_blocks_downstream(forge_home, make_vault, monkeypatch):
    vault = make_vault({"a.md": "## Reflection\nI realize a tiny vault cannot teach a model very much.\n",
                        "b.md": "## Reflection\nLooking back, two notes are a start but not a training set.\n"})
    monkeypatch.setenv("FORGE_VAULT", str(vault))
    result = materialize(DATA, resources={"forge": ForgeSettingsResource()}, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["minimum_curated_examples"].passed is False
    assert checks["minimum_curated_examples"].metadata["curated_examples"].value == 2
    assert not result.success

    monkeypatch.setenv("FORGE_MIN_EXAMPLES_SEVERITY", "WARN")
    assert materialize(DATA, resources={"forge": ForgeSettingsResource()}).success
