"""Each Obsidian construct, through markdown-it tokens."""
from forge_pipeline.extraction.markdown import frontmatter_tags, parse_note, split_frontmatter
from forge_pipeline.extraction.obsidian import find_tags, normalize_inline


def texts(note):
    return [b.text for b in note.blocks]


def test_frontmatter_is_split_and_parsed():
    note = parse_note("---\ntitle: Hello\ntags: [journal, Reflection]\n---\nI think so, deeply and honestly today.\n")
    assert note.frontmatter["title"] == "Hello"
    assert frontmatter_tags(note.frontmatter) == ["journal", "Reflection"]
    assert texts(note) == ["I think so, deeply and honestly today."]


def test_frontmatter_tags_as_string_and_with_hash():
    assert frontmatter_tags({"tags": "#insight, work"}) == ["insight", "work"]
    assert frontmatter_tags({"tag": "learning"}) == ["learning"]


def test_broken_frontmatter_is_reported_and_body_kept():
    note = parse_note("---\ntags: [a\nx: \"open\n---\nBody text stays readable here.\n")
    assert note.frontmatter == {}
    assert "not valid YAML" in note.frontmatter_error
    assert texts(note) == ["Body text stays readable here."]


def test_dashes_not_on_first_line_are_not_frontmatter():
    assert split_frontmatter("text\n---\na: 1\n---\n")[0] is None


def test_wikilinks_become_display_text():
    assert normalize_inline("see [[Projects/Queue migration|the notes]] and [[Reading/Book]] or [[Note#Part]]") == \
        "see the notes and Book or Note"


def test_embeds_comments_and_block_ids_removed():
    note = parse_note("A thought with an image ![[img.png]] and %%secret%% words ^abc123\n")
    assert texts(note) == ["A thought with an image and words"]


def test_multi_paragraph_comment_hidden():
    note = parse_note("Before.\n\n%% start of a comment\n\nstill hidden #insight\n\nend %%\n\nAfter.\n")
    assert texts(note) == ["Before.", "After."]
    assert all("insight" not in b.tags for b in note.blocks)


def test_tags_in_code_are_not_tags():
    note = parse_note("Use `#learning` here.\n\n```\n#insight in a fence\n```\n\n    #analysis indented code\n")
    assert [t for b in note.blocks for t in b.tags] == []
    assert texts(note) == ["Use `#learning` here."]


def test_tags_found_case_and_nesting_kept():
    assert find_tags("a #Insight and #reflection/work, not a#b nor #123 nor http://x/#frag") == ["Insight", "reflection/work"]


def test_tags_removed_from_text():
    note = parse_note("Meetings without a written question drift. #insight\n")
    assert texts(note) == ["Meetings without a written question drift."]
    assert note.blocks[0].tags == ["insight"]


def test_callout_marker_removed():
    note = parse_note("> [!note] Reminder\n> I think the checklist matters.\n")
    # the callout's title line is a label, not prose: it is not glued onto the text below it
    assert texts(note) == ["I think the checklist matters."]
    assert note.blocks[0].in_callout


def test_tables_and_html_blocks_are_not_prose():
    note = parse_note("| a | b |\n|---|---|\n| I think | x |\n\n<div>\nI think html\n</div>\n\nReal text here.\n")
    assert texts(note) == ["Real text here."]


def test_inline_html_tags_dropped_text_kept():
    note = parse_note('I think <span style="x">quietly</span> so.\n')
    assert texts(note) == ["I think quietly so."]


def test_sections_and_list_items_and_tasks():
    note = parse_note("# Day\n## Log\n- ran 5 km today\n- [ ] buy milk\n## Reflection\nA paragraph.\n")
    kinds = [(b.kind, b.section, b.is_task) for b in note.blocks]
    assert kinds == [("item", "Log", False), ("item", "Log", True), ("paragraph", "Reflection", False)]
    assert note.headings == [(1, "Day"), (2, "Log"), (2, "Reflection")]
