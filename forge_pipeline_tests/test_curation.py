"""Dedup, length filters, the split, and review decisions that survive re-extraction."""
import io

import pytest

from forge_pipeline.config import load_config
from forge_pipeline.curation.curate import curate, curate_examples
from forge_pipeline.curation.dedup import find_duplicates
from forge_pipeline.curation.review import ReviewStore, review_interactive
from forge_pipeline.curation.split import split_train_eval
from forge_pipeline.curation.validators import overlap_problems, personal_data_problems
from forge_pipeline.extraction.extractor import extract_training_data
from forge_pipeline.files import read_jsonl

BASE = "I realize that most of my stress this month came from one unanswered email I kept postponing."


def ex(i, text, src=None):
    return {"id": f"{i:016x}", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                            {"role": "assistant", "content": text}],
            "source_file": src or f"n{i}.md", "tags": [], "date": None, "kind": "pattern", "section": None}


def distinct(n):
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
    return [f"I think {words[i % 16]} {i} and {words[(i * 7) % 16]} {i * 13} matter in different ways for {i}." for i in range(n)]


def test_exact_duplicates_ignore_case_space_and_punctuation():
    d = find_duplicates([BASE, BASE.upper().replace(" ", "  ").rstrip("."), "Something else entirely, really."], 0.7)
    assert d == {1: ("exact_duplicate", 0)}


def test_near_duplicate_rewrites_are_found_and_distinct_thoughts_kept():
    rewritten = "I realize that most of my stress this month came from one unanswered email that I kept on postponing."
    other = "Running before work changes the whole day and I make fewer sloppy decisions later."
    assert find_duplicates([BASE, other, rewritten], 0.7) == {2: ("near_duplicate", 0)}
    assert find_duplicates([BASE, rewritten], 0.99) == {}  # the threshold is honoured


def test_near_duplicates_draw_the_minhash_permutations_once_and_decide_as_fresh_signatures_do(monkeypatch):
    """Drawing MinHash's 128 permutations again for every example was 9 of 40 s curating 30,000 examples; drawn
    once, the decisions equal those from datasketch's own fresh MinHash per text, scored with the exact
    Jaccard of the shingle sets as an independent check that the pairs found are real rewrites."""
    from datasketch import MinHash

    from forge_pipeline.curation import dedup

    texts = [BASE, "I realize that most of my stress this month came from one unanswered email that I kept on postponing.",
             *distinct(30), "I realize that most of my stress this month came from one unanswered email I kept avoiding."]
    draws = []
    real = MinHash._init_permutations
    monkeypatch.setattr(MinHash, "_init_permutations", lambda self, *a, **k: draws.append(1) or real(self, *a, **k))
    found = find_duplicates(texts, 0.7)
    assert len(draws) == 1, len(draws)
    monkeypatch.setattr(MinHash, "_init_permutations", real)

    def signature(text):
        m = MinHash(num_perm=dedup.NUM_PERM, hashfunc=dedup._hash32)
        m.update_batch(dedup._shingles(dedup.normalize_for_dedup(text)))
        return m

    kept, want = [], {}
    for i, t in enumerate(texts):
        hits = [j for j in kept if signature(texts[j]).jaccard(signature(t)) >= 0.7]
        if hits:
            want[i] = ("near_duplicate", min(hits))
        else:
            kept.append(i)
    assert found == want == {1: ("near_duplicate", 0), 32: ("near_duplicate", 0)}, (found, want)
    for i, (_, j) in found.items():
        a, b = (set(dedup._shingles(dedup.normalize_for_dedup(texts[k]))) for k in (i, j))
        assert len(a & b) / len(a | b) >= 0.6


def test_threshold_validated():
    with pytest.raises(ValueError, match="near_dup_threshold"):
        find_duplicates(["a"], 0)


def test_length_filters_and_reasons(forge_home):
    cfg = load_config(min_chars=20, max_chars=200)
    rows = [ex(0, "too short"), ex(1, "x" * 201)] + [ex(i + 2, t) for i, t in enumerate(distinct(5))]
    train, evals, report = curate_examples(rows, cfg)
    assert report.dropped_by_reason == {"too_long": 1, "too_short": 1}
    assert len(train) + len(evals) == 5


def test_split_is_deterministic_stable_and_has_eval():
    rows = [ex(i, t) for i, t in enumerate(distinct(200))]
    train, evals = split_train_eval(rows, 0.1)
    assert 5 <= len(evals) <= 40 and not {r["id"] for r in train} & {r["id"] for r in evals}
    # adding examples never moves an existing one across the split
    train2, evals2 = split_train_eval(rows + [ex(1000 + i, f"new {i}") for i in range(50)], 0.1)
    assert {r["id"] for r in evals} <= {r["id"] for r in evals2}
    assert split_train_eval(rows[:3], 0.0)[1]  # at least one eval example
    with pytest.raises(ValueError):
        split_train_eval(rows[:1], 0.1)


def test_review_interactive_and_persistence(forge_home, tmp_path):
    rows = [ex(i, t) for i, t in enumerate(distinct(5))]
    store = ReviewStore(tmp_path / "review" / "decisions.json")
    out = io.StringIO()
    counts = review_interactive(rows, store, io.StringIO("a\nr\nx\ne\nA better wording of it.\n\ns\nq\n"), out)
    assert counts == {"accept": 1, "reject": 1, "edit": 1, "skip": 1, "pending": 2}
    assert "n0.md" in out.getvalue() and "please answer" in out.getvalue()
    reloaded = ReviewStore(tmp_path / "review" / "decisions.json")
    assert reloaded.get(rows[1]["id"])["decision"] == "reject"
    assert reloaded.get(rows[2]["id"]) == {**reloaded.get(rows[2]["id"]), "decision": "edit", "text": "A better wording of it."}
    assert [r["id"] for r in reloaded.pending(rows)] == [rows[3]["id"], rows[4]["id"]]


def test_review_decisions_survive_reextraction_and_apply(forge_home, make_vault):
    vault = make_vault({f"n{i}.md": f"## Reflection\n{t}\n" for i, t in enumerate(distinct(12))})
    cfg = load_config(vault=str(vault), eval_fraction=0.0)
    extract_training_data(config=cfg)
    rows = read_jsonl(cfg.extracted_path)
    store = ReviewStore(cfg.review_decisions_path)
    store.decide(rows[0]["id"], "reject")
    store.decide(rows[1]["id"], "edit", "An edited reflection that is long enough to keep.")
    extract_training_data(config=cfg)  # a nightly re-extraction
    report = curate(cfg)
    curated = read_jsonl(cfg.curated_path) + read_jsonl(cfg.eval_path)
    ids = {r["id"]: r for r in curated}
    assert rows[0]["id"] not in ids and report.dropped_by_reason == {"rejected_in_review": 1}
    assert ids[rows[1]["id"]]["messages"][-1]["content"] == "An edited reflection that is long enough to keep."
    assert report.edited == 1


def test_bad_decisions_file_is_a_clear_error(tmp_path):
    p = tmp_path / "decisions.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="decisions.json"):
        ReviewStore(p)
    assert p.read_text() == "{not json"


def test_curate_sample_vault_end_to_end(config):
    extract_training_data(config=config)
    report = curate(config)
    train, evals = read_jsonl(config.curated_path), read_jsonl(config.eval_path)
    assert report.train_count == len(train) and report.eval_count == len(evals) >= 1
    assert report.train_count + report.eval_count >= 50
    assert report.dropped_by_reason.get("near_duplicate", 0) >= 3
    assert report.dropped_by_reason.get("exact_duplicate", 0) >= 1
    assert personal_data_problems(train + evals) == [] and overlap_problems(train, evals) == []


def test_curate_without_extraction_is_a_clear_error(config):
    with pytest.raises(FileNotFoundError, match="forge extract"):
        curate(config)


def test_validators_catch_problems():
    assert personal_data_problems([ex(0, "mail me at a.b@example.com")])
    row = ex(1, "same text here")
    assert overlap_problems([row], [row]) and overlap_problems([row], [{**row, "id": "f" * 16}])
