"""Reflection back-translation (issue 12, "Better user turns"): forge_pipeline/curation/user_turns.py.

The llama-cpp path runs a tiny real model (random weights, so its output is degenerate: the fallback case);
accepted questions come from plain functions standing in for a model that writes well, since no small
model here writes good questions deterministically. One slow test runs the real embedded Gemma.
"""
from __future__ import annotations

import json
import re
import stat

import pytest

from forge_pipeline.curation import user_turns as ut
from forge_pipeline.curation.curate import curate
from forge_pipeline.files import sha256_file, write_jsonl

SYSTEM = {"role": "system", "content": "You are a thoughtful, reflective companion."}


def row(ex_id: str, source: str, section, date, reflection: str, summary: str | None = None) -> dict:
    user = f'Looking back on "{source}", what stands out?'
    if summary:
        user += f"{ut.SUMMARY_MARK}{summary}"
    return {"id": ex_id, "messages": [SYSTEM, {"role": "user", "content": user},
                                      {"role": "assistant", "content": reflection}],
            "source_file": source, "tags": [], "date": date, "kind": "section", "section": section}


ROWS = [
    row("a" * 16, "Areas/Running.md", "Reflection", None,
        "I realize the long runs only happen when I protect Saturday mornings from errands and chores."),
    row("b" * 16, "Journal/2026/08/2026-08-04.md", "Evening review", "2026-08-04",
        "I think the sourdough starter failed because the kitchen was cold, and I rushed the second rise.",
        summary="Baked bread, visited grandmother Ottilie, repaired the greenhouse."),
    row("c" * 16, "Reading/Meditations.md", "Notes", None,
        "Looking back, the chapter on the dichotomy of control made the noisy neighbours feel smaller."),
]


@pytest.fixture(scope="module")
def tiny_choice(tmp_path_factory):
    from forge_pipeline_tests.tiny_models import make_tiny_gguf

    work = tmp_path_factory.mktemp("tiny-bt")
    path = make_tiny_gguf(work / "tiny.gguf", seed=0, work=work)
    return ut.ModelChoice(path, "sha256:" + sha256_file(path), gpu=False)


def grounded_writer(calls: list[str]):
    """Writes a question from the last 'Entry:' line of the prompt (a model that writes well)."""
    def generate(prompt: str) -> tuple[str, bool]:
        calls.append(prompt)
        entry = prompt.rsplit("Entry: ", 1)[1]
        noun = max(re.findall(r"[a-z]{6,}", entry), key=len)
        return f" What did I learn about the {noun}?", False
    return generate


def never(prompt: str) -> tuple[str, bool]:
    raise AssertionError("generation on a re-run that should come from the cache")


def test_degenerate_real_generation_falls_back_to_template_and_keeps_the_reflection(config, tiny_choice):
    rows, report = ut.backtranslate_user_turns(ROWS, config, model=tiny_choice)  # real llama-cpp, random weights
    assert [r["user_turn"] for r in rows] == ["template"] * len(ROWS)
    assert sum(report.fallback.values()) == len(ROWS) and report.generated == 0
    for before, after in zip(ROWS, rows):
        assert after["messages"] == before["messages"]  # template user turn and verbatim reflection
        assert {k: v for k, v in after.items() if k != "user_turn"} == before
    cache = json.loads((config.cache_dir / "user_turns.json").read_text())
    # refused text is never stored, only why it was refused
    assert all(e["question"] is None and e["reason"] for e in cache["entries"].values())


def test_accepted_question_replaces_only_the_user_turn_and_rerun_hits_the_cache(config, tiny_choice):
    calls: list[str] = []
    first, r1 = ut.backtranslate_user_turns(ROWS, config, model=tiny_choice, generator=grounded_writer(calls))
    assert len(calls) == len(ROWS) and r1.generated == len(ROWS)
    for before, after in zip(ROWS, first):
        assert after["user_turn"] == "model"
        assert after["messages"][1]["content"].startswith("What did I learn about the ")
        assert after["messages"][2] == before["messages"][2]  # the reflection, byte for byte
        assert after["messages"][0] == before["messages"][0] and after["id"] == before["id"]
    assert ROWS[0]["messages"][1]["content"].startswith("Looking back")  # the input rows are not changed
    cache_file = config.cache_dir / "user_turns.json"
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600

    second, r2 = ut.backtranslate_user_turns(ROWS, config, model=tiny_choice, generator=never)
    assert second == first and r2.from_cache == len(ROWS) and r2.generated == 0 and r2.generation_s == 0

    # a new example is the only one generated; a removed one leaves the cache
    new = row("d" * 16, "Areas/Garden.md", None, None, "I think the tomatoes need less water than I give them.")
    calls.clear()
    third, _ = ut.backtranslate_user_turns(ROWS[1:] + [new], config, model=tiny_choice,
                                           generator=grounded_writer(calls))
    assert len(calls) == 1 and "tomatoes" in calls[0]
    assert set(json.loads(cache_file.read_text())["entries"]) == {"b" * 16, "c" * 16, "d" * 16}

    # another model or prompt version regenerates
    calls.clear()
    other = ut.ModelChoice(tiny_choice.path, "sha256:other", gpu=False)
    ut.backtranslate_user_turns(ROWS[1:] + [new], config, model=other, generator=grounded_writer(calls))
    assert len(calls) == 3


def test_the_prompt_holds_this_note_only(config, tiny_choice):
    calls: list[str] = []
    ut.backtranslate_user_turns(ROWS, config, model=tiny_choice, generator=grounded_writer(calls))
    fixed = set(re.findall(r"\w+", ut.HEADER + " ".join(" ".join(s) for s in ut.FEW_SHOT)))
    for i, prompt in enumerate(calls):
        mine = ROWS[i]
        own_words = set(re.findall(r"\w+", json.dumps(mine, ensure_ascii=False)))
        assert mine["messages"][2]["content"] in prompt and ut.note_context(mine) in prompt
        for other in ROWS[:i] + ROWS[i + 1:]:
            foreign = set(re.findall(r"\w+", json.dumps(other, ensure_ascii=False))) - own_words - fixed
            leaked = {w for w in foreign if re.search(rf"\b{re.escape(w)}\b", prompt)}
            assert not leaked, (i, leaked)
    assert "Ottilie" in calls[1] and "Ottilie" not in calls[0] + calls[2]  # the day summary is this day's


@pytest.mark.parametrize("text,cut_off,reason", [
    ("", False, "empty"),
    ("   ", False, "empty"),
    ("Why?", False, "too_short"),
    ("What " + "really " * 40 + "happened?", False, "too_long"),
    ("What did I learn about the long runs on Saturday", True, "too_long"),
    ("assistant: what did I learn about running?", False, "role_marker"),
    ("Question: why do the long runs happen?", False, "role_marker"),
    ("<start_of_turn>user why do I run", False, "role_marker"),
    ("What did I tell [PHONE] about running?", False, "placeholder"),
    ("What do I think about {topic}?", False, "placeholder"),
    ("Why do I run \ufffd\ufffd on Saturday?", False, "garbled"),
    ("Why do I keep skipping my evening runs?", False, "copied_example"),
    ("the long runs only happen when I protect Saturday mornings", False, "echoes_answer"),
    ("What was the reason for this?", False, "ungrounded"),
    ("Should I e-mail maya.lee@example.org about the long runs?", False, "personal_data"),
    ("Why do my long runs only happen on Saturdays?", False, None),
])
def test_question_rules(text, cut_off, reason):
    assert ut.question_problem(text, ROWS[0], cut_off) == reason


def test_curate_hook_follows_the_setting(config, tiny_choice):
    write_jsonl(config.extracted_path, ROWS)
    off = config.model_copy(update={"backtranslate_user_turns": False})
    report = curate(off)
    assert report.user_turns == {} and not (config.cache_dir / "user_turns.json").exists()
    on = config.model_copy(update={"backtranslate_user_turns": True, "backtranslation_model": tiny_choice.path})
    report = curate(on)
    assert report.user_turns["examples"] == len(ROWS)  # the real tiny model ran (and fell back)
    curated = [json.loads(line) for p in (config.curated_path, config.eval_path)
               for line in p.read_text().splitlines()]
    by_id = {r["id"]: r for r in ROWS}
    assert len(curated) == len(ROWS)
    for r in curated:
        assert r["messages"][2] == by_id[r["id"]]["messages"][2] and r["user_turn"] in {"model", "template"}


@pytest.mark.slow
def test_embedded_gemma_writes_grounded_questions_or_falls_back(config):
    choice = ut.choose_model(config)
    rows, report = ut.backtranslate_user_turns(ROWS, config, model=choice)
    assert report.generated + sum(report.fallback.values()) == len(ROWS)
    assert report.generated >= 1, report.fallback
    for before, after in zip(ROWS, rows):
        assert after["messages"][2] == before["messages"][2]
        if after["user_turn"] == "model":
            assert ut.question_problem(after["messages"][1]["content"], before) is None
