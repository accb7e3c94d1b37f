"""Issue 12, "Opt-out that works everywhere": what a person marks private reaches no output at all.

Every check greps the bytes of every file under FORGE_HOME (JSONL, caches, stats, reports) for canary
words planted in the private text and names: an independent check, not a look at the code's own counts.
"""
from pathlib import Path

from forge_pipeline.config import load_config
from forge_pipeline.curation.curate import curate
from forge_pipeline.extraction.extractor import extract_training_data
from forge_pipeline.extraction.inventory import ScanOptions, inventory_notes
from forge_pipeline.files import read_jsonl

PUBLIC = "I realize {w} is a thought I am happy to train on, and it says so plainly."
PRIVATE = "I think {w} is something nobody else should ever read, not even a model."


def grep_home(home: Path, *needles: str) -> list[str]:
    hits = []
    for p in home.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{n} in {p.relative_to(home)}" for n in needles if n.encode() in data]
    return hits


def vault_files():
    return {
        "public.md": f"## Reflection\n{PUBLIC.format(w='alpha')}\n",
        "fm-flag.md": f"---\nprivate: true\n---\n## Reflection\n{PRIVATE.format(w='CANARYFLAG')}\n",
        "fm-tag CANARYNAME.md": f"---\ntags: [journal, private]\n---\n{PRIVATE.format(w='CANARYTAG')}\n",
        "fm-broken.md": f"---\nprivate: true\ntags: [a\n---\n{PRIVATE.format(w='CANARYBROKEN')}\n",
        "Private/therapy CANARYFOLDERNAME.md": f"{PRIVATE.format(w='CANARYFOLDER')}\n",
        "Journal/private/nested.md": f"{PRIVATE.format(w='CANARYNESTED')}\n",
        "People/ana.md": f"{PRIVATE.format(w='CANARYGLOB')}\n",
        "mixed.md": (
            "## Day in short\nSecret day CANARYSUMMARY at the clinic. #private\n"
            f"## Notes\n{PUBLIC.format(w='bravo')}\n\n{PRIVATE.format(w='CANARYPARA')} #private\n\n"
            f"- {PRIVATE.format(w='CANARYITEM')} #private\n- {PUBLIC.format(w='charlie')}\n"
            f"## Therapy CANARYHEADING #private\n{PRIVATE.format(w='CANARYSECTION')}\n"
            f"### Nested under it\n{PRIVATE.format(w='CANARYSUB')}\n"
            f"## Reflection\n{PUBLIC.format(w='delta')}\n\n{PRIVATE.format(w='CANARYINSECTION')} #private\n"
        ),
    }


CANARIES = ["CANARYFLAG", "CANARYTAG", "CANARYNAME", "CANARYBROKEN", "CANARYFOLDER", "CANARYFOLDERNAME",
            "CANARYNESTED", "CANARYGLOB", "CANARYSUMMARY", "CANARYPARA", "CANARYITEM", "CANARYHEADING",
            "CANARYSECTION", "CANARYSUB", "CANARYINSECTION"]


def test_private_text_reaches_no_output(forge_home, make_vault, capsys):
    from forge_pipeline.cli import main

    vault = make_vault(vault_files())
    cfg = load_config(vault=str(vault), private_globs=["People/*"], eval_fraction=0.3)
    report = extract_training_data(config=cfg)
    rows = read_jsonl(cfg.extracted_path)
    texts = " ".join(r["messages"][-1]["content"] for r in rows)
    for word in ("alpha", "bravo", "charlie", "delta"):
        assert word in texts  # public text around the private parts is still used
    curate(cfg)
    assert grep_home(forge_home, *CANARIES) == []
    assert report.private_notes == {"frontmatter private tag": 1, "frontmatter private: true": 2,
                                    "private folder": 2, "private glob": 1}
    assert report.private_blocks == {"inline private tag": 4, "private section": 2}
    # the command line says how many and why, never what
    assert main(["extract", "--vault", str(vault)]) == 0
    out = capsys.readouterr()
    assert "private, excluded: 5 notes" in out.out and "6 paragraphs or items" in out.out
    assert not [c for c in CANARIES if c in out.out + out.err]


def test_private_folder_and_globs_are_settings(forge_home, make_vault):
    vault = make_vault({"Vault2/Secret/a.md": f"{PRIVATE.format(w='x')}\n", "b.md": f"{PUBLIC.format(w='y')}\n",
                        "Private/c.md": f"{PUBLIC.format(w='z')}\n"})
    cfg = load_config(vault=str(vault), private_folders=["Secret"], private_globs=[])
    extract_training_data(config=cfg)
    sources = {r["source_file"] for r in read_jsonl(cfg.extracted_path)}
    assert sources == {"b.md", "Private/c.md"}  # Private/ is only the default


def test_inventory_does_not_list_private_folders(make_vault):
    vault = make_vault({"Private/CANARYNAME.md": "x\n", "a.md": "y\n"})
    inv = inventory_notes(vault, options=ScanOptions(private_folders=("Private",)))
    assert [n["path"] for n in inv["notes"]] == ["a.md"] and "CANARYNAME" not in str(inv)
    assert inv["private_excluded"] == {"private folder": 1}


def test_private_tag_name_is_configurable(forge_home, make_vault):
    vault = make_vault({"a.md": f"{PRIVATE.format(w='CANARYCUSTOM')} #secret\n\n{PUBLIC.format(w='echo')}\n"})
    cfg = load_config(vault=str(vault), private_tags=["secret"])
    extract_training_data(config=cfg)
    assert grep_home(forge_home, "CANARYCUSTOM") == []


def test_sample_vault_private_notes_and_paragraphs_never_leave(config, sample_vault):
    report = extract_training_data(config=config)
    curate(config)
    assert grep_home(config.home_dir, "PRIVATE-CANARY", "Therapy 2026-09", "hospital") == []
    assert report.private_notes == {"frontmatter private tag": 1, "frontmatter private: true": 1, "private folder": 1}
    assert report.private_blocks == {"inline private tag": 2, "private section": 2}
    family = [r for r in read_jsonl(config.extracted_path) if r["source_file"] == "Areas/Family.md"]
    assert len(family) == 3  # the public paragraph, list item and reflection section still count
