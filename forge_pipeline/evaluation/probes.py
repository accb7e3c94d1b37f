"""The probe prompts every model answers each night, and the bundled general-text set for drift.

The default probes are journaling questions a person asks their companion (the first is the README's own
curl example). A user file (``FORGE_EVALUATION_PROBES_PATH``: a JSON list of strings, or a text file with
one prompt per line) replaces them. The general-text paragraphs are plain encyclopedic prose written for
this project (no personal data); a fine-tune should not move far from the base on them.
"""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_PROBES = (
    "What did I learn this week?",
    "I keep postponing the hard conversation with my manager. What should I do?",
    "Looking back, what drains my energy the most?",
    "Help me reflect on how my running habit is going.",
    "I feel like I'm not good enough at my job. Can you help me think it through?",
    "What's one thing I should try differently tomorrow morning?",
    "Summarize what I've been reading lately and what stuck with me.",
    "How do I usually make big decisions, and does it work for me?",
)

GENERAL_TEXT = (
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "sugars. It takes place mainly in the leaves, inside small structures called chloroplasts, and releases "
    "oxygen into the air as a by-product.",
    "The printing press with movable type spread across Europe in the second half of the fifteenth century. "
    "Books became cheaper and more common, and the number of people who could read grew steadily over the "
    "following two hundred years.",
    "To bake a simple loaf of bread, mix flour, water, salt and yeast into a dough, knead it until it is "
    "smooth, and let it rise for about an hour. Shape the loaf, let it rise again, and bake it in a hot oven "
    "until the crust is brown.",
    "A river carries water from higher ground towards a lake or the sea. Along the way it wears down rock, "
    "moves sand and gravel, and shapes wide valleys. Many cities were built beside rivers because they gave "
    "water, food and a way to travel.",
    "In mathematics, a prime number is a whole number greater than one that can be divided evenly only by "
    "one and by itself. The first few primes are two, three, five, seven and eleven, and there are infinitely "
    "many of them.",
    "The heart is a muscle that pumps blood through the body. Arteries carry blood away from the heart to the "
    "organs, and veins bring it back. An adult heart beats about seventy times a minute when the body is at "
    "rest.",
)


class ProbeFileError(ValueError):
    """The user's probe file cannot be used; the message names the file and the problem."""


def load_probes(path: Path | None = None) -> list[str]:
    """The probe prompts: the user's file when given, else the defaults."""
    if path is None:
        return list(DEFAULT_PROBES)
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProbeFileError(f"{path}: probe file not found (FORGE_EVALUATION_PROBES_PATH)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProbeFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ProbeFileError(f"{path}: expected a JSON list of prompt strings")
        prompts = [p.strip() for p in data]
    else:
        prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ProbeFileError(f"{path}: no prompts in the file")
    return prompts
