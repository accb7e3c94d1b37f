"""`forge extract --explain` prints what the training data would carry, never more (issue 12): a file name,
a heading or a paragraph can hold an e-mail, a phone number or a key, so names, headings and previews are
shown redacted, as in the JSONL; the addresses themselves are searched for in the output (a byte search,
independent of the redactor)."""
from forge_pipeline.cli import main

EMAIL, KEY = "maya.lee@example.org", "ghp_" + "Zq8Xw3Lm9Pt2Rk7Vb4Nc6Hd1Jf5Gs0Ya8Ue3"
PHONE = "+44 7911 123456"


def _vault(make_vault):
    return make_vault({
        f"Inbox/Thread with {EMAIL}.md": f"## Call {PHONE} #reflection\nI wrote to {EMAIL} after the call, and I "
                                         "realize it mattered more than the plan.\n",
        f"Inbox/Key {KEY}.md": "- [ ] rotate it\n",  # gives no example: named by the vault explanation
    })


def _leaks(text: str) -> list[str]:
    return [s for s in (EMAIL, "maya.lee", KEY, "Zq8Xw3Lm9", "7911 123456") if s in text]


def test_explain_a_note_shows_its_name_heading_and_text_redacted(forge_home, make_vault, capsys):
    vault = _vault(make_vault)
    assert main(["extract", "--vault", str(vault), "--explain", f"Inbox/Thread with {EMAIL}.md"]) == 0
    out = capsys.readouterr()
    assert "Inbox/Thread with [EMAIL].md:" in out.out and "[PHONE]" in out.out, out.out
    assert "IN SECTION" in out.out and "[EMAIL]" in out.out.split("\n", 1)[1]  # the paragraph's own e-mail too
    assert not _leaks(out.out + out.err), out.out


def test_explain_the_vault_names_notes_redacted(forge_home, make_vault, capsys):
    vault = _vault(make_vault)
    assert main(["extract", "--vault", str(vault), "--explain"]) == 0
    out = capsys.readouterr()
    assert "1 of 2 notes gave no example" in out.out and "Inbox/Key [API_KEY].md: task line" in out.out, out.out
    assert not _leaks(out.out + out.err), out.out


def test_explain_says_a_private_note_is_excluded_and_nothing_else(forge_home, make_vault, capsys):
    vault = make_vault({"Journal/Plans qzorbl.md": "---\nprivate: true\n---\n## qheading\nI think qbody is mine.\n",
                        "Private/qfolder.md": "I think qfolderbody is mine.\n",
                        "a.md": "I think the walk cleared my head more than the long meeting did.\n"})
    for query in ("Journal/Plans qzorbl.md", "Plans qzorbl", "Private/qfolder.md", "Private/qfolder"):
        assert main(["extract", "--vault", str(vault), "--explain", query]) == 0
        out = capsys.readouterr().out
        assert "private (" in out and "excluded" in out, out
        assert not [w for w in ("qzorbl", "qheading", "qbody", "qfolder") if w in out], out
    assert main(["extract", "--vault", str(vault), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "2 private notes excluded" in out and "0 of 1 notes gave no example" in out, out
    assert not [w for w in ("qzorbl", "qheading", "qbody", "qfolder") if w in out], out
