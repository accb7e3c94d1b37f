"""Obsidian's inline syntax, applied to the text of one markdown-it ``text`` token at a time.

markdown-it-py parses CommonMark; Obsidian's own constructs (tags, wikilinks, embeds, block ids,
%% comments %%) arrive inside plain text tokens, and code spans arrive as separate ``code_inline``
tokens, so nothing here ever sees code.

Every pattern here must run in linear time on any input: a note is untrusted text, and one quadratic
pattern turned a 32 KB run of ``[[`` into 18 s (1 MB: hours). The rule that keeps them linear: a
repeated class never includes the character that can start the next attempt (``[`` inside ``[[...]]``),
so each attempt stops where the next begins. forge_pipeline_tests/test_hostile_notes.py times each one on
64 KB of its worst input.
"""
from __future__ import annotations

import re

# Obsidian tags: '#' then letters/digits/_/-/ '/', not all digits, not part of a word or a URL fragment.
TAG_RE = re.compile(r"(?<![\w/#&])#([A-Za-z_\u00C0-\uFFFF][\w\-/\u00C0-\uFFFF]*|[0-9]+[A-Za-z_\-/][\w\-/]*)")
EMBED_RE = re.compile(r"!\[\[[^\[\]\n]*\]\]")
WIKILINK_RE = re.compile(r"\[\[([^\[\]|\n]*)(?:\|([^\[\]\n]*))?\]\]")
BLOCK_ID_RE = re.compile(r"(?:^|\s)\^[A-Za-z0-9-]+\s*$")
INLINE_COMMENT_RE = re.compile(r"%%.*?%%", re.S)
CALLOUT_RE = re.compile(r"^\s*\[![\w-]+\][+-]?\s*")


def find_tags(text: str) -> list[str]:
    """Tags in ``text`` as written, without '#' (e.g. ``reflection/work``)."""
    return [m.group(1).rstrip("/-") for m in TAG_RE.finditer(text)]


def wikilink_display(match: re.Match) -> str:
    target, alias = match.group(1), match.group(2)
    if alias:
        return alias.strip()
    target = target.split("#", 1)[0] or target.lstrip("#")  # [[Note#Heading]] reads as "Note"
    return target.rsplit("/", 1)[-1].strip()


def normalize_inline(text: str) -> str:
    """Obsidian markup -> the words a reader sees: tags dropped, wikilinks as display text, embeds,
    comments and block ids removed."""
    text = INLINE_COMMENT_RE.sub("", text)
    text = EMBED_RE.sub("", text)
    text = WIKILINK_RE.sub(wikilink_display, text)
    text = TAG_RE.sub("", text)
    text = BLOCK_ID_RE.sub("", text)
    return text


def strip_callout_marker(text: str) -> str:
    return CALLOUT_RE.sub("", text, count=1)


_SPACES_RE = re.compile(r"[ \t]{2,}")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
# (?<!\s): an attempt starts only at the first space of a run, never inside it (linear on long runs)
_SPACE_BEFORE_PUNCT_RE = re.compile(r"(?<!\s)\s+([,.;:!?])")


def tidy(text: str) -> str:
    """Collapse the gaps that removed markup leaves behind."""
    text = "\n".join(_SPACES_RE.sub(" ", line).strip() for line in text.splitlines())
    text = _BLANK_LINES_RE.sub("\n\n", text).strip()
    return _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)


def tag_matches(tag: str, reflection_tags: set[str]) -> bool:
    """``reflection/work`` counts as ``reflection``; the comparison ignores case."""
    return tag.lower().split("/", 1)[0] in reflection_tags
