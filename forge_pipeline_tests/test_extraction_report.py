"""Issue 10 part 3: extraction returns a typed report; the pure functions take only the values they need;
the public entry points users' scripts call (TrainingDataExtractor, extract_training_data) keep working."""
import json

from forge_pipeline.extraction.detection import DetectionRules
from forge_pipeline.extraction.extractor import (
    NoteOptions,
    TrainingDataExtractor,
    extract_note,
    extract_training_data,
    extract_vault,
)
from forge_pipeline.extraction.inventory import ScanOptions
from forge_pipeline.extraction.report import ExtractionReport
from forge_pipeline.files import read_jsonl

NOTE = "## Reflection\n{text}\n"
RULES = DetectionRules.build(["insight"], ["I think"], ["Reflection"], 6)


def test_extract_note_needs_no_settings_object():
    opts = NoteOptions(rules=RULES, system_prompt="Be kind.")
    result = extract_note("Journal/2026-01-02.md", b"I think small notes make a big difference over time.\n", opts)
    [ex] = result.examples
    assert ex["date"] == "2026-01-02" and ex["kind"] == "pattern"
    assert ex["messages"][0]["content"] == "Be kind."


def test_extract_vault_is_pure_and_returns_a_typed_report(make_vault, tmp_path):
    vault = make_vault({"a.md": NOTE.format(text="I think a typed report beats a dict of guesses."),
                        "b.md": "Groceries and errands, nothing to think about here at all.\n"})
    examples, report = extract_vault(vault, NoteOptions(rules=RULES), ScanOptions())
    assert isinstance(report, ExtractionReport)
    assert (report.total, report.notes_scanned, report.notes_parsed, report.notes_without_examples) == (1, 2, 2, 1)
    assert report.by_kind == {"section": 1} and len(examples) == 1
    assert list(tmp_path.rglob("*.json*")) == []  # no cache path given: nothing written anywhere


def test_extract_training_data_returns_the_report_and_writes_it(forge_home, make_vault, tmp_path):
    vault = make_vault({"a.md": NOTE.format(text="I realize one call does the whole extraction job.")})
    report = extract_training_data(vault, tmp_path / "out.jsonl")
    assert isinstance(report, ExtractionReport) and report.total == 1
    assert report.output == str(tmp_path / "out.jsonl") and len(read_jsonl(tmp_path / "out.jsonl")) == 1
    assert json.loads((tmp_path / "out_stats.json").read_text()) == report.to_dict()
    # scripts written against the old dict still index it
    assert report["total"] == 1 and report["by_kind"] == {"section": 1} and report.get("nope", 0) == 0


def test_training_data_extractor_object_api(forge_home, make_vault):
    from forge_pipeline.config import load_config
    vault = make_vault({"a.md": NOTE.format(text="I think the object API still works for old scripts.")})
    cfg = load_config(vault=str(vault))
    ex = TrainingDataExtractor(cfg)
    rows = ex.extract()
    assert isinstance(ex.report, ExtractionReport) and ex.get_stats()["total"] == len(rows) == 1
    assert ex.save_to_jsonl() == cfg.extracted_path and read_jsonl(cfg.extracted_path) == rows
    assert json.loads(cfg.extraction_stats_path.read_text())["total"] == 1
