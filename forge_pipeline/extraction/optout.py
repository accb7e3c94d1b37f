"""The writer's own opt-out: notes, sections, paragraphs and list items marked private never leave here.

A note is private by frontmatter (``private: true``, or a private tag in its tags); a paragraph or list
item by an inline private tag (``#private``); a section, with everything nested under it, by a private
tag on its heading (``## Therapy #private``). Folders and globs are handled by the vault scan (a private
note there is never even read). Only counts by reason leave this module, never text.
"""
from __future__ import annotations

import re
from collections import Counter

from forge_pipeline.extraction.markdown import (
    FrontmatterError,
    ParsedNote,
    frontmatter_tags,
    parse_frontmatter,
    split_frontmatter,
)
from forge_pipeline.extraction.obsidian import tag_matches

_TRUE = {True, "true", "yes", "on", "1"}
# Broken YAML cannot be trusted to say "not private": these lines alone are enough to exclude the note.
_RAW_PRIVATE_RE = re.compile(r"(?im)^[ \t]*private[ \t]*:[ \t]*[\"']?(?:true|yes|on|1)\b")
_RAW_TAGS_RE = re.compile(r"(?im)^[ \t]*tags?[ \t]*:(.{0,400})$")


def note_private_reason(note: ParsedNote, frontmatter_source: str | None, private_tags: frozenset[str]) -> str | None:
    return _private_reason(note.frontmatter, bool(note.frontmatter_error), frontmatter_source, private_tags)


def frontmatter_private_reason(text: str, private_tags: frozenset[str]) -> str | None:
    """Why a note's frontmatter marks it private, from its text alone (no Markdown parse): the vault scan and
    inventory call this on notes they would otherwise list by name (too large, or merely hashed)."""
    source = split_frontmatter(text.lstrip("\ufeff"))[0]
    try:
        fm, broken = parse_frontmatter(source), False
    except FrontmatterError:
        fm, broken = {}, True
    return _private_reason(fm, broken, source, private_tags)


def _private_reason(fm: dict, broken: bool, frontmatter_source: str | None, private_tags: frozenset[str]
                    ) -> str | None:
    value = fm.get("private")
    if (value.lower() if isinstance(value, str) else value) in _TRUE:
        return "frontmatter private: true"
    if any(tag_matches(t, private_tags) for t in frontmatter_tags(fm)):
        return "frontmatter private tag"
    if broken and frontmatter_source:
        if _RAW_PRIVATE_RE.search(frontmatter_source):
            return "frontmatter private: true"
        for m in _RAW_TAGS_RE.finditer(frontmatter_source):
            words = re.findall(r"[\w/-]+", m.group(1))
            if any(tag_matches(w, private_tags) for w in words):
                return "frontmatter private tag"
    return None


def private_blocks(note: ParsedNote, private_tags: frozenset[str]) -> tuple[list[bool], Counter]:
    """(for each block, whether it is private; how many blocks were excluded, by reason)."""
    private_sections: set[int] = set()
    owner_level = None
    for idx, (level, _text) in enumerate(note.headings, start=1):
        if owner_level is not None and level <= owner_level:
            owner_level = None
        tags = note.heading_tags[idx - 1] if idx - 1 < len(note.heading_tags) else []
        if owner_level is None and any(tag_matches(t, private_tags) for t in tags):
            owner_level = level
        if owner_level is not None:
            private_sections.add(idx)
    mask, counts = [], Counter()
    for b in note.blocks:
        if b.section_index in private_sections:
            mask.append(True)
            counts["private section"] += 1
        elif any(tag_matches(t, private_tags) for t in b.tags):
            mask.append(True)
            counts["inline private tag"] += 1
        else:
            mask.append(False)
    return mask, counts

