"""The extractor on the sample vault and on small vaults: schema, stats, incremental cache, bad input."""
import json
from pathlib import Path

import pytest

from forge_pipeline.config import load_config
from forge_pipeline.curation.validators import validate_jsonl_rows
from forge_pipeline.extraction.extractor import TrainingDataExtractor, extract_training_data
from forge_pipeline.extraction.inventory import VaultError
from forge_pipeline.files import read_jsonl
from forge_pipeline_tests.conftest import tree_digest

NOTE = "## Reflection\n{text}\n"


def extractor_for(vault, **kw):
    return TrainingDataExtractor(load_config(vault=str(vault), **kw))


def test_sample_vault_extraction(config, sample_vault):
    before = tree_digest(sample_vault)
    ex = TrainingDataExtractor(config)
    rows = ex.extract()
    path = ex.save_to_jsonl()
    stats = ex.get_stats()
    assert path == config.extracted_path and read_jsonl(path) == rows
    assert validate_jsonl_rows(rows) == []
    assert stats["total"] == len(rows) >= 60
    assert set(stats["by_kind"]) == {"tag", "pattern", "section"}
    assert stats["redactions"].keys() >= {"PHONE", "CARD"}  # the labels themselves: test_redaction.py
    sources = {r["source_file"] for r in rows}
    assert not any(s.startswith(("templates/", ".obsidian/")) for s in sources)
    assert "Inbox/Shopping list.md" not in sources and "Inbox/Ideas.md" not in sources
    assert any(s.startswith("Reading/") for s in sources) and any(s.startswith("Decisions/") for s in sources)
    text = json.dumps(rows)
    assert "must never be extracted" not in text and "#insight inside code" not in text
    assert "@mailbox.example" not in text and "4111 1111" not in text and "f8Kq29X" not in text
    warned = {w["file"] for w in stats["warnings"]}
    assert "Journal/2026/08/2026-08-15 latin1 export.md" in warned
    assert "Journal/2026/09/2026-09-09 broken.md" in warned
    # the note with broken frontmatter still contributes its reflection
    assert "Journal/2026/09/2026-09-09 broken.md" in sources
    assert {"file": "templates/", "reason": "excluded folder"} in stats["notes_skipped"]
    assert tree_digest(sample_vault) == before


def test_example_fields(config, make_vault):
    vault = make_vault({"Journal/2026/03/2026-03-14.md": "---\ntags: [journal]\n---\n## Day in short\nRan 8 km.\n"
                        "## Reflection\nI think rest is part of the work, not a reward after it. #insight\n"})
    [row] = extractor_for(vault).extract()
    assert row["source_file"] == "Journal/2026/03/2026-03-14.md"
    assert row["date"] == "2026-03-14" and row["kind"] == "section" and row["section"] == "Reflection"
    assert row["tags"] == ["#insight", "#journal"]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == "You are a thoughtful, reflective companion."
    assert "2026-03-14" in row["messages"][1]["content"] and "Ran 8 km." in row["messages"][1]["content"]
    assert row["messages"][2]["content"] == "I think rest is part of the work, not a reward after it."


def test_date_from_frontmatter_else_null(make_vault):
    vault = make_vault({"a.md": "---\ndate: 2026-05-01\n---\nI think dates in frontmatter count too, clearly.\n",
                        "b.md": "I think a note without any date has a null date field.\n"})
    rows = {r["source_file"]: r for r in extractor_for(vault).extract()}
    assert rows["a.md"]["date"] == "2026-05-01" and rows["b.md"]["date"] is None


def test_ids_and_templates_are_deterministic(make_vault, tmp_path):
    vault = make_vault({f"n{i}.md": NOTE.format(text=f"I realize thing number {i} matters a great deal to me.")
                        for i in range(12)})
    a = extractor_for(vault, home=str(tmp_path / "h1")).extract()
    b = extractor_for(vault, home=str(tmp_path / "h2")).extract()
    assert a == b
    assert len({r["messages"][1]["content"].split(" ")[0] for r in a}) > 1  # several user templates in use


def test_custom_system_prompt_and_sections(make_vault):
    vault = make_vault({"x.md": "## Evening pages\nToday was a long day and I am glad it is over now.\n"})
    ex = extractor_for(vault, system_prompt="Be brief.", reflection_sections=["Evening pages"])
    [row] = ex.extract()
    assert row["kind"] == "section" and row["messages"][0]["content"] == "Be brief."


def test_incremental_cache_add_change_delete(config, make_vault, monkeypatch):
    vault = make_vault({f"n{i}.md": NOTE.format(text=f"I realize lesson {i} took me far too long to learn.")
                        for i in range(5)})
    cfg = load_config(vault=str(vault))
    first = TrainingDataExtractor(cfg)
    first.extract()
    assert first.get_stats()["notes_parsed"] == 5

    import forge_pipeline.extraction.workers as mod  # where notes are parsed (in this process: 5 notes)
    calls = []
    real = mod.extract_note
    monkeypatch.setattr(mod, "extract_note", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = TrainingDataExtractor(cfg)
    assert again.extract() == first.examples
    assert calls == [] and again.get_stats()["notes_from_cache"] == 5

    (vault / "n1.md").write_text(NOTE.format(text="I realize a changed lesson reads differently now."))
    (vault / "n4.md").unlink()
    (vault / "new.md").write_text(NOTE.format(text="I realize a new note arrived in the vault today."))
    third = TrainingDataExtractor(cfg)
    rows = third.extract()
    assert sorted(calls) == ["n1.md", "new.md"]
    texts = {r["source_file"]: r["messages"][2]["content"] for r in rows}
    assert set(texts) == {"n0.md", "n1.md", "n2.md", "n3.md", "new.md"}
    assert texts["n1.md"] == "I realize a changed lesson reads differently now."
    # a fresh extraction without cache gives the same result
    assert TrainingDataExtractor(cfg, use_cache=False).extract() == rows


def test_changed_rules_invalidate_the_cache(make_vault):
    vault = make_vault({"a.md": "Mental memo: always sleep on big decisions first.\n"})
    assert extractor_for(vault).extract() == []
    assert len(extractor_for(vault, reflection_patterns=["Mental memo"]).extract()) == 1


def test_bad_notes_become_warnings_and_the_run_goes_on(make_vault, monkeypatch):
    vault = make_vault({
        "good.md": NOTE.format(text="I realize the good note still comes through fine."),
        "latin1.md": "I think the café is nice.\n".encode("latin-1"),
        "broken.md": "---\ntags: [a\n---\nI think broken frontmatter keeps its body text.\n",
        "big.md": "I think " + "word " * 300,
        "locked.md": NOTE.format(text="I realize this one cannot be read by us."),
    })
    (vault / "loop").symlink_to(vault, target_is_directory=True)
    (vault / "dangling.md").symlink_to(vault / "missing.md")
    real_read = Path.read_bytes

    def read_bytes(self):  # root can read any file, so a permission error is simulated
        if self.name == "locked.md":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    ex = extractor_for(vault, max_note_bytes=1000)
    rows = ex.extract()
    stats = ex.get_stats()
    problems = {w["file"]: w["problem"] for w in stats["warnings"]}
    assert "not valid UTF-8" in problems["latin1.md"]
    assert "not valid YAML" in problems["broken.md"]
    assert "unreadable" in problems["locked.md"]
    assert "symlink loop" in problems["loop"]
    assert "broken symlink" in problems["dangling.md"]
    assert any(s["file"] == "big.md" and "too large" in s["reason"] for s in stats["notes_skipped"])
    # undecodable bytes are replaced (a warning names the byte offset), the note is not dropped whole
    assert "at byte 15" in problems["latin1.md"]
    assert {r["source_file"] for r in rows} == {"good.md", "broken.md", "latin1.md"}
    [latin1] = [r for r in rows if r["source_file"] == "latin1.md"]
    assert latin1["messages"][2]["content"] == "I think the caf\ufffd is nice."


def test_missing_and_empty_vault_are_clear_errors(tmp_path, forge_home):
    with pytest.raises(VaultError, match="vault not found"):
        extractor_for(tmp_path / "nope").extract()
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaultError, match="no Markdown notes"):
        extractor_for(tmp_path / "empty").extract()


def test_extract_training_data_one_call(forge_home, make_vault, tmp_path):
    vault = make_vault({"a.md": NOTE.format(text="I realize one call does the whole extraction job.")})
    stats = extract_training_data(vault, tmp_path / "out.jsonl")
    assert stats["total"] == 1 and len(read_jsonl(tmp_path / "out.jsonl")) == 1
    assert json.loads((tmp_path / "out_stats.json").read_text())["total"] == 1
