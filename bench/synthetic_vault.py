"""A seeded synthetic vault of any size for benchmarks: daily notes with summaries, logs, tasks, tagged and
phrased reflections, code blocks and links, at the sample vault's proportions."""
from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

SUBJECTS = ["the migration", "my running", "the team", "guitar practice", "the roadmap", "code review", "sleep",
            "the offsite", "estimates", "on-call", "the book club", "my parents", "the garden", "hiring", "writing"]
VERBS = ["taught me", "reminded me", "showed me", "made me see", "convinced me", "warned me"]
LESSONS = ["that small steps compound", "that rest is part of the work", "to ask for help early",
           "that clarity beats speed", "to write the question down first", "that boring is reliable",
           "to protect the mornings", "that feedback needs a short loop", "to say no more often",
           "that most urgency is borrowed", "to finish one thing before starting two"]
OPENERS = ["I think", "I realize", "Looking back,", "What if", "On one hand", "In hindsight", "I noticed"]
TAGS = ["#insight", "#learning", "#takeaway", "#reflection/work", "#decision", "#analysis", "#realization"]


def reflection(rng: random.Random) -> str:
    return (f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(LESSONS)}, "
            f"and {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(LESSONS)} (day {rng.randint(1, 10**6)}).")


def note(rng: random.Random, d: date) -> str:
    parts = [f"---\ndate: {d.isoformat()}\ntags: [journal]\n---\n# {d.isoformat()}\n",
             f"## Day in short\nWorked on {rng.choice(SUBJECTS)}, then {rng.choice(SUBJECTS)}.\n",
             "## Log\n" + "".join(f"- {rng.randint(7, 20):02d}:00 {rng.choice(SUBJECTS)}\n" for _ in range(4)),
             "## Tasks\n- [ ] call [[People/Anna|Anna]]\n- [x] groceries\n",
             f"## Reflection\n{reflection(rng)}\n\n{reflection(rng)} ^b{rng.randint(0, 999)}\n",
             f"## Notes\n{rng.choice(OPENERS)} {reflection(rng)}\n\n- {reflection(rng)} {rng.choice(TAGS)}\n",
             "```python\nx = 1  # #insight in code\n```\n"]
    return "\n".join(parts)


def build(root: Path, n_notes: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    start = date(2000, 1, 1)
    for i in range(n_notes):
        d = start + timedelta(days=i)
        p = root / "Journal" / f"{d:%Y}" / f"{d:%m}" / f"{d.isoformat()}.md"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(note(rng, d), encoding="utf-8")
    return root


def synthetic_examples(n: int, seed: int = 0, dup_share: float = 0.2) -> list[dict]:
    """n chat examples, dup_share of them lightly re-worded copies of earlier ones."""
    rng = random.Random(seed)
    out: list[dict] = []
    for i in range(n):
        if out and rng.random() < dup_share:
            text = rng.choice(out)["messages"][2]["content"].replace(" and ", " and then ", 1) + " Really."
        else:
            text = f"{rng.choice(OPENERS)} {reflection(rng)} {reflection(rng)}"
        out.append({"id": f"{i:016x}", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                                    {"role": "assistant", "content": text}],
                    "source_file": f"n{i}.md", "tags": [], "date": None, "kind": "pattern", "section": None})
    return out
