"""Issue 12, "Extraction a person can trust": phrasings, heading tags, review headings, where a section
ends, what is not a reflection, hints when little is found, and `forge extract --explain`."""
import pytest

from forge_pipeline.config import (
    DEFAULT_REFLECTION_PATTERNS,
    DEFAULT_REFLECTION_SECTIONS,
    DEFAULT_REFLECTION_TAGS,
    DEFAULT_SUMMARY_SECTIONS,
    load_config,
)
from forge_pipeline.extraction.detection import DetectionRules, detect_reflections
from forge_pipeline.extraction.extractor import extract_training_data
from forge_pipeline.extraction.markdown import parse_note
from forge_pipeline.files import read_jsonl

RULES = DetectionRules.build(DEFAULT_REFLECTION_TAGS, DEFAULT_REFLECTION_PATTERNS, DEFAULT_REFLECTION_SECTIONS, 6,
                             DEFAULT_SUMMARY_SECTIONS)
SEED = ["I think", "I feel", "I realize", "I wonder", "Looking back", "On one hand", "Ultimately decided"]
MORE = ["I realised", "on the one hand", "I've been thinking", "I’ve been thinking", "it struck me", "note to self",
        "In retrospect", "I learnt"]


def detect(text, rules=RULES):
    return detect_reflections(parse_note(text), rules)


@pytest.mark.parametrize("phrase", SEED + MORE)
def test_seed_phrasings_are_the_floor_and_common_ones_are_added(phrase):
    [r] = detect(f"{phrase} that the quiet mornings are where the real work happens.\n")
    assert r.kind == "pattern"


def test_tag_on_a_heading_marks_the_section():
    text = "## Night shift thoughts #reflection\nThe alerts that matter are quiet, the noisy ones we stopped reading.\n" \
           "## Log\n- 09:00 standup with the whole team today\n"
    [r] = detect(text)
    assert (r.kind, r.section) == ("section", "Night shift thoughts") and "#reflection" in r.tags
    assert "#reflection" not in r.text


@pytest.mark.parametrize("heading", ["Evening review", "Daily review", "Weekly review", "Evening reflection"])
def test_journal_review_headings_are_reflection_sections(heading):
    [r] = detect(f"## {heading}\nWriting the handover note calmed me more than any meeting did today.\n")
    assert (r.kind, r.section) == ("section", heading)


def test_reflection_headings_are_configurable(forge_home, make_vault):
    vault = make_vault({"a.md": "## Pages\nWriting three pages each morning empties my head before work.\n"})
    cfg = load_config(vault=str(vault), reflection_sections=["Pages"])
    extract_training_data(config=cfg)
    assert [r["kind"] for r in read_jsonl(cfg.extracted_path)] == ["section"]


def test_a_section_ends_where_the_reflection_ends():
    text = ("## Reflection\nThe retro was honest for the first time in months, because I went first.\n\n"
            "See also [[Projects/Queue migration|the migration notes]] ^r005x\n\n"
            "- [[Areas/Running]]\n- [[Reading/Book]]\n\n"
            "- [ ] send the notes to Priya\n\n"
            "Contact for the vendor: Dana, +44 20 7946 0958.\n\n"
            "The `#learning` tag inside inline code is not a tag.\n\n"
            "```python\nretry = 3  # I think this is fine\n```\n\n"
            "> [!note] Reminder\n> Going first is what made it safe for the others.\n")
    [r] = detect(text)
    assert r.text == ("The retro was honest for the first time in months, because I went first.\n"
                      "Going first is what made it safe for the others.")


def test_timestamped_log_lines_are_not_reflections():
    text = "- 02:10 I think the pharmacy on the corner closes earlier than the sign says\n" \
           "- [14:05] I feel the build is slower again after the upgrade\n" \
           "- 9.30am I realize the train was late again this morning\n"
    assert detect(text) == []
    # a tag is the writer's explicit choice: it still counts
    assert [r.kind for r in detect("02:10 the quiet hours are where I do my best thinking. #insight\n")] == ["tag"]


def test_attributed_quotations_are_not_reflections_but_own_quotes_are():
    quote = "> I think the happiness of your life depends upon the quality of your thoughts.\n> — Marcus Aurelius\n"
    assert detect(quote) == []
    assert detect("> \"I think therefore I am, said the philosopher to the tired crowd.\"\n") == []
    [own] = detect("> I think I finally understand why the rollout order matters so much.\n")
    assert own.kind == "pattern"


def test_sample_vault_has_no_section_tails(config, sample_vault):
    extract_training_data(config=config)
    rows = read_jsonl(config.extracted_path)
    sections = [r["messages"][-1]["content"] for r in rows if r["kind"] == "section"]
    assert len(sections) >= 30
    # an independent check: no line of a section answer looks like navigation, a task, a contact or a title
    bad = [s for s in sections for line in s.splitlines()
           if line.lower().startswith(("see also", "- [ ]", "- [x]", "[ ]", "contact", "reminder "))]
    assert bad == []
    by_file = {r["source_file"]: r for r in rows}
    night = [r for r in rows if r["source_file"] == "Journal/2026/10/2026-10-20 night shift.md"]
    assert sorted(r["section"] for r in night) == ["Evening review", "Night shift thoughts"]
    assert "Reading/Meditations.md" in by_file
    assert all("happiness of your life" not in r["messages"][-1]["content"] for r in rows)


def test_few_examples_give_concrete_hints(forge_home, make_vault, capsys):
    from forge_pipeline.cli import main

    vault = make_vault({"a.md": "Groceries, laundry, a walk.\n", "b.md": "## Plans\n- call the bank tomorrow\n"})
    report = extract_training_data(config=load_config(vault=str(vault)))
    hints = "\n".join(report.hints)
    assert report.total == 0 and "no examples" in hints
    for needle in ("#reflection", "'I think'", "'Reflection'", "FORGE_REFLECTION_TAGS", "FORGE_REFLECTION_PATTERNS",
                   "FORGE_REFLECTION_SECTIONS", "--explain"):
        assert needle in hints
    assert main(["extract", "--vault", str(vault)]) == 0
    assert "hint: no examples" in capsys.readouterr().out


def test_no_hints_when_a_vault_yields_plenty(config, sample_vault):
    assert extract_training_data(config=config).hints == []


def test_explain_a_note_and_the_vault(forge_home, make_vault, capsys):
    from forge_pipeline.cli import main

    vault = make_vault({
        "day.md": "## Log\n- 02:10 I think the pharmacy closes early tonight\n"
                  "## Notes\nI wonder whether the roadmap is a plan or a wish list we are too polite to name.\n\n"
                  "Short one.\n\nI think SECRETWORD is mine alone and stays out of everything. #private\n",
        "empty.md": "- [ ] buy milk\n- [ ] call the bank\n",
    })
    assert main(["extract", "--vault", str(vault), "--explain", "day"]) == 0
    out = capsys.readouterr().out
    assert "timestamped log line" in out and 'phrasing "I wonder"' in out and "too short" in out
    assert "private" in out and "SECRETWORD" not in out
    assert main(["extract", "--vault", str(vault), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 notes gave no example" in out and "empty.md: task line" in out
    assert not (forge_home / "training_data").exists()  # explaining writes nothing
