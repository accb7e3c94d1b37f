"""Tags and file names are redacted wherever they are stored or logged (issue 12, "Every field of every row"):
a tag can hold a secret, and a warning that names a file goes to the CLI, the stats, Dagster's event log and
asset metadata."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import materialize

from forge_pipeline.config import load_config
from forge_pipeline.curation.curate import curate
from forge_pipeline.defs import data_assets
from forge_pipeline.extraction.extractor import TrainingDataExtractor
from forge_pipeline.files import read_jsonl
from forge_pipeline.orchestration.resources import ForgeSettingsResource
from forge_pipeline.privacy.check import find_kinds

GH_TOKEN = "ghp_" + "Zq8Xw3Lm9Pt2Rk7Vb4Nc6Hd1Jf5Gs0Ya8Ue3"
NAMES = ("maya.lee", "noah.k")


def _vault(root: Path) -> Path:
    files = {
        # a warning (invalid UTF-8) about a note whose name holds an e-mail; it is also a reflection
        "Inbox/Thread with maya.lee@example.org.md":
            b"## Reflection\nI realize the thread with her mattered more than the plan itself \xff did.\n",
        # too large: skipped, and the skip names the file
        "Inbox/Old export noah.k@example.net.md": "x" * 2048,
        # tags holding secrets, inline and in frontmatter; ordinary tags stay
        "Journal/2026-03-02.md": "---\ntags: [journal, \"maya.lee@example.org\"]\n---\n"
                                 f"I think the deploy went fine once I rotated the key #reflection #{GH_TOKEN}\n",
    }
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    vault = _vault(tmp_path / "vault")
    home = tmp_path / "home"
    for k, v in {"FORGE_HOME": str(home), "FORGE_VAULT": str(vault), "FORGE_MAX_NOTE_BYTES": "1024",
                 "FORGE_MIN_CURATED_EXAMPLES": "1"}.items():
        monkeypatch.setenv(k, v)
    return home, vault


def _leaks(text: str) -> list[str]:
    return [s for s in (*NAMES, GH_TOKEN, "Zq8Xw3Lm9") if s in text]


def test_tags_are_redacted_and_ordinary_tags_stay(env):
    rows = TrainingDataExtractor(load_config(), use_cache=False).extract()
    tags = [t for r in rows for t in r["tags"]]
    assert "#reflection" in tags and "#journal" in tags
    assert not _leaks(json.dumps(rows)), rows
    assert all(not find_kinds(t) for t in tags), tags  # the independent check finds nothing either
    row = next(r for r in rows if "#reflection" in r["tags"])
    assert row["redactions"].get("EMAIL", 0) >= 1 and row["redactions"].get("API_KEY", 0) >= 1, row["redactions"]


def test_file_names_are_redacted_in_cli_warnings_stats_and_reports(env):
    home, _ = env
    forge = str(Path(sys.executable).with_name("forge"))
    r = subprocess.run([forge, "extract"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # the warnings still name the file, with the e-mail replaced
    assert "Inbox/Thread with [EMAIL].md" in r.stderr and "not valid UTF-8" in r.stderr, r.stderr
    assert "Inbox/Old export [EMAIL].md" in r.stdout + r.stderr
    assert not _leaks(r.stdout + r.stderr)
    r = subprocess.run([forge, "curate"], capture_output=True, text=True, timeout=300)
    assert not _leaks(r.stdout + r.stderr)
    for p in home.rglob("*"):
        if p.is_file():
            assert not _leaks(p.read_bytes().decode("utf-8", "replace")), p


def test_file_names_are_redacted_in_dagster_logs_metadata_and_the_inventory(env):
    home, _ = env
    config = load_config()
    result = materialize([data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples],
                         resources={"forge": ForgeSettingsResource()})
    assert result.success
    events = json.dumps([str(e) for e in result.all_events])  # log messages, metadata, previews
    assert "[EMAIL]" in events and not _leaks(events), _leaks(events)
    inv = json.loads((config.training_data_dir / "vault_inventory.json").read_text())
    assert any(n["path"] == "Inbox/Thread with [EMAIL].md" for n in inv["notes"]), inv["notes"]
    assert not _leaks(json.dumps(inv))
    assert not _leaks(json.dumps(read_jsonl(config.curated_path) + [curate(config).__dict__]))


def test_the_assets_show_a_per_example_redaction_report(env):
    result = materialize([data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples],
                         resources={"forge": ForgeSettingsResource()})
    rows = read_jsonl(load_config().extracted_path)
    md = result.asset_materializations_for_node("extracted_examples")[0].metadata
    table = md["redaction_report"].value
    assert table.startswith("| example | source (redacted) | kind | redactions by type |")
    # one line per example with redactions, its counts as the row carries them (never a value)
    for row in rows:
        line = next(line for line in table.splitlines() if line.startswith(f"| {row['id']} |"))
        for kind, n in row["redactions"].items():
            assert f"{kind} {n}" in line
    assert md["redacted_examples"].value == sum(bool(r["redactions"]) for r in rows) == 2
    curated_md = result.asset_materializations_for_node("curated_examples")[0].metadata
    assert "EMAIL" in curated_md["redaction_report"].value  # counts by type, per example
    assert "API_KEY 1" in curated_md["redaction_report"].value + table
    assert not _leaks(table + curated_md["redaction_report"].value)
