"""Manual review: decisions stored under FORGE_HOME by example id, so they survive re-extraction and
nightly runs. The interactive walk takes its input and output streams as arguments (testable, and the
CLI passes the terminal)."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from forge_pipeline.files import atomic_write_json

DECISIONS = ("accept", "reject", "edit")


class ReviewStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.decisions: dict[str, dict] = {}
        if self.path.exists():
            try:
                self.decisions = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{self.path}: review decisions are not valid JSON ({e}); "
                                 "fix or move the file, nothing was changed") from None

    def decide(self, example_id: str, decision: str, text: str | None = None) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"unknown review decision {decision!r}; expected one of {DECISIONS}")
        if decision == "edit" and not (text and text.strip()):
            raise ValueError("an edit needs the new assistant text")
        entry = {"decision": decision, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if decision == "edit":
            entry["text"] = text.strip()
        self.decisions[example_id] = entry
        atomic_write_json(self.path, self.decisions)  # after each decision: quitting loses nothing

    def get(self, example_id: str) -> dict | None:
        return self.decisions.get(example_id)

    def pending(self, examples: list[dict]) -> list[dict]:
        return [ex for ex in examples if ex["id"] not in self.decisions]


def apply_decisions(examples: list[dict], store: ReviewStore) -> tuple[list[dict], list[dict]]:
    """(kept examples with edits applied, rejected examples)."""
    kept, rejected = [], []
    for ex in examples:
        d = store.get(ex["id"])
        if d and d["decision"] == "reject":
            rejected.append(ex)
            continue
        if d and d["decision"] == "edit":
            ex = {**ex, "messages": [*ex["messages"][:-1], {**ex["messages"][-1], "content": d["text"]}],
                  "edited": True}
        kept.append(ex)
    return kept, rejected


PROMPT = "[a]ccept  [r]eject  [e]dit  [s]kip  [q]uit > "


def review_interactive(examples: list[dict], store: ReviewStore, stdin: TextIO, stdout: TextIO,
                       read_edit: Callable[[str], str] | None = None) -> dict:
    """Walk the pending examples one at a time. Returns counts of what was decided."""
    pending = store.pending(examples)
    counts = {"accept": 0, "reject": 0, "edit": 0, "skip": 0, "pending": len(pending)}
    out = stdout.write
    for n, ex in enumerate(pending, 1):
        user, assistant = ex["messages"][1]["content"], ex["messages"][-1]["content"]
        out(f"\n--- {n}/{len(pending)}  {ex['source_file']}  [{ex['kind']}] {ex.get('section') or ''}\n")
        out(f"tags: {' '.join(ex['tags']) or '-'}   date: {ex.get('date') or '-'}   id: {ex['id']}\n")
        out(f"user: {user}\nassistant: {assistant}\n")
        while True:
            out(PROMPT)
            stdout.flush()
            line = stdin.readline()
            choice = line.strip().lower()[:1] if line else "q"
            if choice in ("a", "r", "s", "q", "e"):
                break
            out("please answer a, r, e, s or q\n")
        if choice == "q":
            break
        if choice == "s":
            counts["skip"] += 1
            continue
        if choice == "e":
            if read_edit is not None:
                new_text = read_edit(assistant)
            else:
                out("new text (end with an empty line):\n")
                lines = []
                while (line := stdin.readline()) and line.strip():
                    lines.append(line.rstrip("\n"))
                new_text = "\n".join(lines)
            if not new_text.strip():
                out("empty edit ignored; example left pending\n")
                continue
            store.decide(ex["id"], "edit", new_text)
            counts["edit"] += 1
            continue
        decision = {"a": "accept", "r": "reject"}[choice]
        store.decide(ex["id"], decision)
        counts[decision] += 1
    counts["pending"] = len(store.pending(examples))
    return counts
