"""Detection rules: tags (frontmatter, inline, nested, any case), phrasing, sections, and the negatives."""
import pytest

from forge_pipeline.config import (
    DEFAULT_REFLECTION_PATTERNS,
    DEFAULT_REFLECTION_SECTIONS,
    DEFAULT_REFLECTION_TAGS,
    DEFAULT_SUMMARY_SECTIONS,
)
from forge_pipeline.extraction.detection import DetectionRules, detect_reflections, find_summary
from forge_pipeline.extraction.markdown import parse_note

RULES = DetectionRules.build(DEFAULT_REFLECTION_TAGS, DEFAULT_REFLECTION_PATTERNS, DEFAULT_REFLECTION_SECTIONS, 6,
                             DEFAULT_SUMMARY_SECTIONS)


def detect(text, rules=RULES):
    return detect_reflections(parse_note(text), rules)


@pytest.mark.parametrize("tag", ["#insight", "#INSIGHT", "#Learning", "#reflection/work", "#decision/personal/big"])
def test_inline_reflection_tags_any_case_and_nested(tag):
    [r] = detect(f"Shipping small changes teaches the team more than big plans. {tag}\n")
    assert r.kind == "tag"
    assert tag in r.tags
    assert tag not in r.text


def test_unrelated_tag_is_not_a_reflection():
    assert detect("Bought batteries and milk and bread at the shop today. #todo\n") == []


def test_phrasing_detected_case_insensitively_on_word_boundaries():
    [r] = detect("looking back, the hardest conversations fixed the most things.\n")
    assert (r.kind, r.matched.lower()) == ("pattern", "looking back")
    assert detect("Thinkingly I thinkk about nothing at all in this sentence.\n") == []


def test_configurable_patterns():
    rules = DetectionRules.build(DEFAULT_REFLECTION_TAGS, ["Note to self"], DEFAULT_REFLECTION_SECTIONS, 6)
    assert [r.kind for r in detect("Note to self: sleep before deciding anything big.\n", rules)] == ["pattern"]
    assert detect("I think this would match the default list only.\n", rules) == []


def test_reflection_section_is_one_unit_with_nested_headings():
    text = "## Log\n- 09:00 standup with the whole team\n## Reflection\nFirst part of the thought.\n\n" \
           "### Detail\n- a bullet that belongs to it too\n## Tasks\n- [ ] something else to do\n"
    [r] = detect(text)
    assert r.kind == "section" and r.section == "Reflection"
    assert r.text == "First part of the thought.\n- a bullet that belongs to it too"


def test_heading_that_only_mentions_a_tag_word_is_not_extracted():
    assert detect("## Insight\nThis heading only names a word.\n\n- buy batteries\n- return the book\n") == []


def test_tasks_and_plain_logs_are_not_reflections():
    assert detect("- [ ] I think I should call mom about the trip\n- 09:00 standup\n- 10:30 review of the design\n") == []


def test_frontmatter_tag_marks_long_prose_but_not_summary_or_lists():
    text = ("---\ntags: [journal, reflection]\n---\n## Day in short\nLong planning meeting in the morning, then a quiet "
            "afternoon refactoring the ingestion service with the team.\n## Log\n- a long list item that should never be "
            "picked up by the frontmatter rule at all\n## Notes\nThe team moves faster when decisions are quick and "
            "revisited openly, and we should keep it that way.\n")
    [r] = detect(text)
    assert r.kind == "tag" and r.section == "Notes"
    assert "#reflection" in r.tags and "#journal" in r.tags


def test_short_units_are_skipped():
    assert detect("I think so. #insight\n") == []


def test_summary_found():
    note = parse_note("## Day in short\nRan 8 km. Shipped the fix.\n## Reflection\nx\n")
    assert find_summary(note, DEFAULT_SUMMARY_SECTIONS) == "Ran 8 km. Shipped the fix."
