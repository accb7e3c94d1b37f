"""Manual review: decisions stored under FORGE_HOME by example id, so they survive re-extraction and
nightly runs. The interactive walk takes its input and output streams as arguments (testable, and the
CLI passes the terminal).

What a decision means to curation: accept keeps the example as extracted (and it is not asked again);
reject drops it from training for good; edit trains on the edited text instead. Undecided examples are
kept, like accepted ones: review is optional."""
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


def current_text(ex: dict, store: ReviewStore) -> str:
    """The assistant text as curation would use it: the last edit if there is one."""
    d = store.get(ex["id"])
    return d["text"] if d and d["decision"] == "edit" else ex["messages"][-1]["content"]


def first_words(text: str, n: int = 8) -> str:
    words = text.split()
    return " ".join(words[:n]) + ("..." if len(words) > n else "")


def list_decisions(examples: list[dict], store: ReviewStore) -> list[str]:
    """One line per decision: when, what, which note, and the first words (of the edit, for an edit)."""
    by_id = {ex["id"]: ex for ex in examples}
    lines = []
    for ex_id, d in sorted(store.decisions.items(), key=lambda kv: kv[1].get("at", "")):
        ex = by_id.get(ex_id)
        where = ex["source_file"] if ex else "(no longer extracted)"
        text = d.get("text") or (ex["messages"][-1]["content"] if ex else "")
        lines.append(f"{d.get('at', '-')}  {d['decision']:6s}  {where}: \"{first_words(text)}\"  [{ex_id}]")
    return lines


PROMPT = "[a]ccept  [r]eject  [e]dit  [s]kip  [b]ack  [q]uit > "
HELP = ("accept: keep it as it is and stop asking; reject: never train on it; edit: train on your wording "
        "instead; skip: decide later; back: return to the previous example and change its decision")


def _terminal_edit(current: str, stdin: TextIO, stdout: TextIO) -> str | None:
    """New text typed in the terminal, or None to keep the current text (a lone '.')."""
    stdout.write("current text:\n" + current + "\n"
                 "type the new text (end with an empty line; a lone '.' keeps the current text):\n")
    lines = []
    while (line := stdin.readline()) and line.strip():
        if line.strip() == "." and not lines:
            return None
        lines.append(line.rstrip("\n"))
    return "\n".join(lines) or None


def review_interactive(examples: list[dict], store: ReviewStore, stdin: TextIO, stdout: TextIO,
                       read_edit: Callable[[str], str] | None = None, include_decided: bool = False) -> dict:
    """Walk the examples one at a time (pending ones, or all with ``include_decided``); 'b' goes back to
    change an earlier decision. ``read_edit(current_text) -> new_text`` edits in $EDITOR (the CLI passes
    it); without it the edit is typed in the terminal. Returns counts of what was decided."""
    queue = examples if include_decided else store.pending(examples)
    counts = {"accept": 0, "reject": 0, "edit": 0, "skip": 0, "pending": len(queue)}
    out = stdout.write
    n = 0
    while 0 <= n < len(queue):
        ex = queue[n]
        current = current_text(ex, store)
        decided = store.get(ex["id"])
        out(f"\n--- {n + 1}/{len(queue)}  {ex['source_file']}  [{ex['kind']}] {ex.get('section') or ''}\n")
        out(f"tags: {' '.join(ex['tags']) or '-'}   date: {ex.get('date') or '-'}   id: {ex['id']}\n")
        if decided:
            out(f"decided: {decided['decision']} ({decided.get('at', '')})\n")
        out(f"user: {ex['messages'][1]['content']}\nassistant: {current}\n")
        while True:
            out(PROMPT)
            stdout.flush()
            line = stdin.readline()
            choice = line.strip().lower()[:1] if line else "q"
            if choice in ("a", "r", "s", "q", "e", "b"):
                break
            out(f"please answer a, r, e, s, b or q ({HELP})\n")
        if choice == "q":
            break
        if choice == "b":
            n = max(n - 1, 0)
            continue
        if choice == "s":
            counts["skip"] += 1
        elif choice == "e":
            new_text = read_edit(current) if read_edit is not None else _terminal_edit(current, stdin, stdout)
            if not new_text or not new_text.strip() or new_text.strip() == current.strip():
                out("text unchanged; no decision recorded\n")
            else:
                store.decide(ex["id"], "edit", new_text)
                counts["edit"] += 1
        else:
            decision = {"a": "accept", "r": "reject"}[choice]
            store.decide(ex["id"], decision)
            counts[decision] += 1
        n += 1
    counts["pending"] = len(store.pending(examples))
    return counts


def edit_in_editor(current: str, editor: str, scratch_dir: Path) -> str:
    """Open ``current`` in $EDITOR in a private scratch file (0600, removed afterwards: it is training text)."""
    import os
    import shlex
    import subprocess
    import tempfile

    scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=scratch_dir, suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(current + "\n")
        subprocess.run([*shlex.split(editor), name], check=True)
        return Path(name).read_text(encoding="utf-8").strip()
    finally:
        Path(name).unlink(missing_ok=True)
