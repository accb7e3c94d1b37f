"""Issue 11, items 8-11 and 14 (data parts): hostile notes and kills never stop or corrupt extraction.

Each test guards against a hang by running the suspect call in a forked child with a deadline, so a
regression fails in seconds instead of hanging the suite.
"""
import json
import multiprocessing as mp
import os
import stat
import time
from pathlib import Path

import pytest

from forge_pipeline.config import load_config
from forge_pipeline.curation.curate import curate, curate_examples
from forge_pipeline.extraction.extractor import TrainingDataExtractor, extract_training_data
from forge_pipeline.files import atomic_write_bytes, read_jsonl

NOTE = "## Reflection\n{text}\n"
GOOD = NOTE.format(text="I realize the good note still comes through fine, whatever its neighbours do.")
OTHER = NOTE.format(text="Looking back, a second distinct reflection keeps the split honest about its two sides.")


def _child(conn, fn, args):
    t = time.perf_counter()
    try:
        fn(*args)
        conn.send(("ok", time.perf_counter() - t))
    except BaseException as e:  # report, never hang
        conn.send(("error", repr(e)))


def run_with_deadline(fn, *args, seconds: float):
    """Seconds ``fn(*args)`` took in a forked child; fails the test if it runs past ``seconds``."""
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_child, args=(child, fn, args))
    proc.start()
    if not parent.poll(seconds):
        proc.kill()
        proc.join()
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s")
    status, value = parent.recv()
    proc.join()
    assert status == "ok", value
    return value


def extract(vault, **kw):
    ex = TrainingDataExtractor(load_config(vault=str(vault), **kw))
    rows = ex.extract()
    ex.save_to_jsonl()
    return rows, ex.get_stats()


# --- 8: a file name that is not valid UTF-8 ------------------------------------------------------------------

def test_non_utf8_file_name_is_a_warning_and_the_run_goes_on(forge_home, make_vault):
    vault = make_vault({"good.md": GOOD})
    with open(os.path.join(os.fsencode(vault), b"bad\xff\xfename.md"), "wb") as f:
        f.write(NOTE.format(text="I think this note has a name no UTF-8 JSON can hold.").encode())
    rows, stats = extract(vault)
    assert {r["source_file"] for r in rows} == {"good.md"}
    [w] = [w for w in stats["warnings"] if "UTF-8" in w["problem"]]
    assert w["file"] == "bad\\xff\\xfename.md"  # escaped, and valid JSON
    json.dumps(stats, ensure_ascii=False).encode("utf-8")


# --- 9: a YAML alias bomb -------------------------------------------------------------------------------------

ALIAS_BOMB = "---\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + "".join(
    f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, n in zip("abcdefgh", "bcdefghi")
) + "title: *i\ntags: *i\n---\n## Reflection\nI think the body of a note with a hostile header can still be read.\n"


def _extract_bomb(vault, home):
    TrainingDataExtractor(load_config(vault=str(vault), home=str(home))).extract()


def test_yaml_alias_bomb_is_a_warning_within_a_second(forge_home, make_vault, tmp_path):
    assert len(ALIAS_BOMB.split("---")[1]) < 600
    vault = make_vault({"bomb.md": ALIAS_BOMB, "good.md": GOOD})
    elapsed = run_with_deadline(_extract_bomb, vault, tmp_path / "h", seconds=20)
    assert elapsed < 1.5
    rows, stats = extract(vault)
    problems = {w["file"]: w["problem"] for w in stats["warnings"]}
    assert "alias" in problems["bomb.md"]
    assert {r["source_file"] for r in rows} == {"good.md", "bomb.md"}  # the body is still read


# --- 10: linear-time patterns and a per-note time budget ----------------------------------------------------

ADVERSARIAL = {
    "wikilink": "[[",
    "wikilink_alias": "[[a|",
    "embed": "![[",
    "tag_digits": "#0",
    "comment": "%%a",
    "nbsp_run": "\u00a0",
    "block_ids": " ^a",
}


def _normalize(unit, n):
    from forge_pipeline.extraction.obsidian import normalize_inline, tidy
    tidy(normalize_inline("a" + unit * n + "a"))


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_inline_patterns_are_linear(name):
    unit = ADVERSARIAL[name]
    n = 64_000 // len(unit)  # 64 KB: a quadratic pattern needs over a minute here (WIKILINK: 18 s at 32 KB)
    assert run_with_deadline(_normalize, unit, n, seconds=15) < 1.0


def _extract_one(text):
    from forge_pipeline.extraction.extractor import extract_note, options_from_settings
    extract_note("x.md", text.encode(), options_from_settings(load_config()))


@pytest.mark.parametrize("name", ["wikilink", "embed", "nbsp_run"])
def test_whole_note_extraction_is_linear(forge_home, name):
    unit = ADVERSARIAL[name]
    small = run_with_deadline(_extract_one, "I think " + unit * (16_000 // len(unit)), seconds=15)
    big = run_with_deadline(_extract_one, "I think " + unit * (256_000 // len(unit)), seconds=60)
    assert big < max(16 * small * 3, 1.0), (small, big)  # 16x the text, never ~256x the time


def test_a_note_over_its_time_budget_is_a_warning(forge_home, make_vault):
    slow = "\n\n".join(f"I think paragraph {i} is one of very many in this long note." for i in range(12_000))
    vault = make_vault({"slow.md": slow, "good.md": GOOD})
    from forge_pipeline.extraction.redaction import redact
    redact("loads the detectors before the budget applies")
    rows, stats = extract(vault, note_time_budget_s=0.2)
    problems = {w["file"]: w["problem"] for w in stats["warnings"]}
    assert "time budget" in problems["slow.md"]
    assert {r["source_file"] for r in rows} == {"good.md"}
    assert any(s["file"] == "slow.md" for s in stats["notes_skipped"])


# --- 11: symlinks out of the vault ----------------------------------------------------------------------------

def test_symlinks_leaving_the_vault_are_not_followed_by_default(forge_home, make_vault, tmp_path):
    outside = make_vault({"secret.md": NOTE.format(text="I think OUTSIDE-CANARY must never be read by the scanner."),
                          "etc/passwd.md": NOTE.format(text="I realize OUTSIDE-CANARY lives in a linked folder.")},
                         name="outside")
    vault = make_vault({"good.md": GOOD, "inner/real.md": GOOD.replace("good", "inner")})
    (vault / "linked.md").symlink_to(outside / "secret.md")
    (vault / "etc").symlink_to(outside / "etc", target_is_directory=True)
    (vault / "inner-link").symlink_to(vault / "inner", target_is_directory=True)  # inside: still followed
    rows, stats = extract(vault)
    assert "OUTSIDE-CANARY" not in json.dumps(rows)
    problems = {w["file"]: w["problem"] for w in stats["warnings"]}
    assert "outside the vault" in problems["linked.md"] and "outside the vault" in problems["etc"]
    assert {r["source_file"] for r in rows} >= {"good.md", "inner/real.md"}

    rows, _ = extract(vault, follow_external_symlinks=True)
    assert {"linked.md", "etc/passwd.md"} <= {r["source_file"] for r in rows}


# --- 14: kills, fsync, one commit, permissions, too-large files -----------------------------------------------

def test_leftover_tmp_files_from_a_kill_are_cleaned(config, make_vault):
    vault = make_vault({"good.md": GOOD, "b.md": OTHER})
    cfg = load_config(vault=str(vault))
    cfg.training_data_dir.mkdir(parents=True)
    cfg.cache_dir.mkdir(parents=True)
    stale = [cfg.training_data_dir / ".extracted.jsonl.k1ll3d.tmp", cfg.cache_dir / ".extraction-cache.json.x.tmp",
             cfg.training_data_dir / ".curated.jsonl.y.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    unrelated = cfg.training_data_dir / "notes.txt"
    unrelated.write_text("mine")
    extract_training_data(config=cfg)
    curate(cfg)
    assert [p for p in stale if p.exists()] == [] and unrelated.exists()


def test_atomic_write_fsyncs_the_directory_after_replace(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(
        "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    atomic_write_bytes(tmp_path / "sub" / "f.json", b"{}")
    assert events == ["fsync-file", "replace", "fsync-dir"]


def _rows(n, salt):
    return [{"id": f"{salt}{i:015x}", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
             {"role": "assistant", "content": f"I think {salt} thought number {i} is distinct {i * 7919} {salt * 3}."}],
             "source_file": f"n{i}.md", "tags": [], "date": None, "kind": "pattern", "section": None}
            for i in range(n)]


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4])
def test_curated_and_eval_are_one_commit_even_after_a_kill(config, monkeypatch, kill_at):
    from forge_pipeline.files import write_jsonl

    write_jsonl(config.extracted_path, _rows(40, "a"))
    curate(config)
    first = (read_jsonl(config.curated_path), read_jsonl(config.eval_path))
    write_jsonl(config.extracted_path, _rows(40, "b"))
    real_replace, calls = os.replace, []

    def killed_at_some_rename(a, b):
        calls.append(b)
        if len(calls) == kill_at:  # the process dies before this rename (e.g. between train and eval)
            raise SystemExit("killed")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", killed_at_some_rename)
    try:
        curate(config)
    except SystemExit:
        pass
    monkeypatch.setattr(os, "replace", real_replace)
    # the next reader (or run) sees one run's pair, never a mix
    from forge_pipeline.curation.curate import read_curated
    train, evals = read_curated(config)
    second = curate_examples(_rows(40, "b"), config)[:2]
    assert (train, evals) in (first, tuple(second))


def test_training_data_files_are_private(config, make_vault):
    vault = make_vault({"good.md": GOOD, "b.md": OTHER})
    cfg = load_config(vault=str(vault), eval_fraction=0.5)
    extract_training_data(config=cfg)
    curate(cfg)
    for p in [cfg.extracted_path, cfg.curated_path, cfg.eval_path, cfg.cache_dir / "extraction-cache.json"]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


def test_forge_extract_lists_files_skipped_as_too_large(forge_home, make_vault, capsys, monkeypatch):
    from forge_pipeline.cli import main

    vault = make_vault({"good.md": GOOD, "big.md": "I think " + "word " * 400})
    monkeypatch.setenv("FORGE_MAX_NOTE_BYTES", "1000")
    assert main(["extract", "--vault", str(vault)]) == 0
    out = capsys.readouterr()
    assert "big.md" in out.out + out.err and "too large" in out.out + out.err


def test_vault_is_untouched(make_vault, forge_home):
    from forge_pipeline_tests.conftest import tree_digest
    vault = make_vault({"good.md": GOOD})
    before = tree_digest(vault)
    extract(vault)
    assert tree_digest(vault) == before
    assert Path(vault / "good.md").read_text() == GOOD


def test_the_time_budget_interrupts_one_long_call(forge_home, monkeypatch):
    import forge_pipeline.extraction.note as note_mod

    real = note_mod.redact

    def slow_redact(text, *a, **k):  # one call that never returns in time (like 1 MB of digits: 50 s)
        if "stuck" in text:
            end = time.perf_counter() + 5
            while time.perf_counter() < end:  # burns CPU, as a pathological pattern does
                pass
        return real(text, *a, **k)

    monkeypatch.setattr(note_mod, "redact", slow_redact)
    opts = note_mod.options_from_settings(load_config(note_time_budget_s=0.5))
    t = time.perf_counter()
    result = note_mod.extract_note("x.md", b"I think this reflection gets stuck in the redactor.\n", opts)
    assert time.perf_counter() - t < 2 and "time budget" in result.skipped and result.examples == []
    # and the timer is gone afterwards
    assert note_mod.extract_note("y.md", GOOD.encode(), opts).examples
