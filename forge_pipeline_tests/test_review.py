"""Issue 12 "Review" and issue 15's dedup wording: edits start from the current text, decisions can be
revisited and listed, only what curation would keep is reviewed, filters by note, tag and kind."""
import io

from forge_pipeline.config import load_config
from forge_pipeline.curation.curate import curate_examples, reviewable
from forge_pipeline.curation.review import ReviewStore, list_decisions, review_interactive

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def ex(i, text=None, src=None, tags=(), kind="pattern"):
    text = text or f"I think {WORDS[i % 16]} {i} and {WORDS[(i * 7) % 16]} {i * 13} matter in different ways for {i}."
    return {"id": f"{i:016x}", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                            {"role": "assistant", "content": text}],
            "source_file": src or f"n{i}.md", "tags": list(tags), "date": None, "kind": kind, "section": None}


def run(rows, store, answers, **kw):
    out = io.StringIO()
    counts = review_interactive(rows, store, io.StringIO(answers), out, **kw)
    return counts, out.getvalue()


def test_edit_starts_from_the_current_text(tmp_path):
    rows = [ex(0)]
    store = ReviewStore(tmp_path / "d.json")
    seen = []
    run(rows, store, "e\n", read_edit=lambda current: seen.append(current) or current + " Edited once.")
    assert seen == [rows[0]["messages"][-1]["content"]]
    # editing again starts from the edited text, not from the extracted one
    run(rows, store, "e\n", read_edit=lambda current: seen.append(current) or current.replace("once", "twice"),
        include_decided=True)
    assert seen[1].endswith("Edited once.") and store.get(rows[0]["id"])["text"].endswith("Edited twice.")


def test_terminal_edit_keeps_the_current_text_on_a_lone_dot(tmp_path):
    rows = [ex(0)]
    store = ReviewStore(tmp_path / "d.json")
    counts, out = run(rows, store, "e\n.\n")
    assert rows[0]["messages"][-1]["content"] in out  # shown before editing
    assert counts["edit"] == 0 and store.get(rows[0]["id"]) is None


def test_go_back_and_change_a_decision(tmp_path):
    rows = [ex(i) for i in range(3)]
    store = ReviewStore(tmp_path / "d.json")
    counts, out = run(rows, store, "a\nb\nr\na\nq\n")  # accept 0, back to 0, reject it, accept 1, quit
    assert store.get(rows[0]["id"])["decision"] == "reject"
    assert store.get(rows[1]["id"])["decision"] == "accept"
    assert store.get(rows[2]["id"]) is None
    assert "decided: accept" in out  # going back shows the decision being changed


def test_list_decisions_names_note_and_first_words(tmp_path):
    rows = [ex(0, src="Journal/a.md"), ex(1, src="Journal/b.md")]
    store = ReviewStore(tmp_path / "d.json")
    store.decide(rows[0]["id"], "reject")
    store.decide(rows[1]["id"], "edit", "A rewritten thought that reads better now.")
    lines = list_decisions(rows, store)
    assert any("reject" in line and "Journal/a.md" in line and "I think alpha 0" in line for line in lines)
    assert any("edit" in line and "Journal/b.md" in line and "A rewritten thought" in line for line in lines)


def test_reviewable_is_what_curation_would_keep(forge_home):
    cfg = load_config(min_chars=20)
    base = ex(0).copy()
    rows = [base, ex(1, text=base["messages"][-1]["content"]), ex(2, text="too short"), ex(3)]
    assert [r["id"] for r in reviewable(rows, cfg)] == [rows[0]["id"], rows[3]["id"]]


def test_filters_by_note_tag_and_kind(forge_home):
    rows = [ex(0, src="Journal/2026/a.md", tags=["#insight"]), ex(1, src="Reading/b.md", kind="section"),
            ex(2, src="Journal/2026/c.md", tags=["#decision"], kind="section")]
    cfg = load_config()
    ids = lambda **f: [r["source_file"] for r in reviewable(rows, cfg, **f)]  # noqa: E731
    assert ids(note="Journal/") == ["Journal/2026/a.md", "Journal/2026/c.md"]
    assert ids(tag="insight") == ["Journal/2026/a.md"] and ids(tag="#Decision") == ["Journal/2026/c.md"]
    assert ids(kind="section") == ["Reading/b.md", "Journal/2026/c.md"]


def test_duplicates_name_the_kept_note_and_its_first_words(forge_home):
    text = "I realize that most of my stress this month came from one unanswered email I kept postponing."
    rows = [ex(0, text=text, src="Journal/first.md"), ex(1, text=text, src="Journal/later.md")] + \
        [ex(i) for i in range(2, 6)]
    _, _, report = curate_examples(rows, load_config())
    [d] = report.dropped
    assert d["duplicate_of_id"] == rows[0]["id"]
    assert d["duplicate_of"] == 'Journal/first.md: "I realize that most of my stress this..."'


def test_cli_review_list_and_filters(forge_home, make_vault, capsys, monkeypatch):
    from forge_pipeline.cli import main

    vault = make_vault({"a.md": "## Reflection\nI think the first note has a reflection worth keeping.\n",
                        "b.md": "I realize the second note speaks in its own phrasing today.\n"})
    assert main(["extract", "--vault", str(vault)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("r\n"))
    assert main(["review", "--vault", str(vault), "--kind", "pattern"]) == 0
    assert main(["review", "--vault", str(vault), "--list"]) == 0
    out = capsys.readouterr().out
    assert "reject" in out and "b.md" in out and "I realize the second note" in out
