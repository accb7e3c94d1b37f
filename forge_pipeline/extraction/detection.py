"""Which blocks of a parsed note are reflections, and of which kind.

The unit is the paragraph or list item that holds the reflection; a whole section when its heading is
one of the configured reflection headings (a journal's "## Reflection"). Precedence: section, then tag,
then phrasing. A frontmatter reflection tag marks the note's longer prose paragraphs (not its lists,
not its day summary).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from forge_pipeline.extraction.markdown import Block, ParsedNote, frontmatter_tags
from forge_pipeline.extraction.obsidian import tag_matches

# A frontmatter tag alone is weaker evidence than an inline one: demand real prose.
FRONTMATTER_MIN_WORDS = 15


@dataclass
class Reflection:
    kind: str  # "tag" | "pattern" | "section"
    text: str
    tags: list[str]  # with '#', as written, deduplicated in order
    section: str | None
    matched: str  # the tag, phrase or heading that made it a reflection


@dataclass(frozen=True)
class DetectionRules:
    tags: frozenset[str]
    patterns: tuple[str, ...]
    sections: frozenset[str]
    min_words: int
    summary_sections: frozenset[str] = frozenset()

    @classmethod
    def build(cls, tags, patterns, sections, min_words: int, summary_sections=()) -> DetectionRules:
        return cls(frozenset(t.lower().lstrip("#") for t in tags), tuple(patterns),
                   frozenset(s.strip().lower() for s in sections), min_words,
                   frozenset(s.strip().lower() for s in summary_sections))

    @property
    def pattern_re(self) -> re.Pattern | None:
        if not self.patterns:
            return None
        alts = "|".join(re.escape(p.strip()).replace(r"\ ", r"\s+") for p in sorted(self.patterns, key=len, reverse=True))
        return re.compile(rf"(?i)(?<!\w)(?:{alts})(?!\w)")


def _dedup_tags(tags: list[str]) -> list[str]:
    seen, out = set(), []
    for t in tags:
        key = t.lower()
        if key not in seen:
            seen.add(key)
            out.append("#" + t)
    return out


def _word_count(text: str) -> int:
    return len(text.split())


def _block_text(block: Block) -> str:
    return f"- {block.text}" if block.kind == "item" else block.text


def detect_reflections(note: ParsedNote, rules: DetectionRules) -> list[Reflection]:
    pattern_re = rules.pattern_re
    fm_tags = frontmatter_tags(note.frontmatter)
    fm_reflective = [t for t in fm_tags if tag_matches(t, rules.tags)]
    out: list[Reflection] = []

    # Sections whose heading is a reflection heading: the heading's index and everything nested under it.
    reflective_sections: dict[int, int] = {}  # section_index of a block -> index of the owning reflective heading
    owner, owner_level = None, 0
    for idx, (level, text) in enumerate(note.headings, start=1):
        if owner is not None and level <= owner_level:
            owner = None
        if owner is None and text.strip().rstrip(":").lower() in rules.sections:
            owner, owner_level = idx, level
        if owner is not None:
            reflective_sections[idx] = owner

    grouped: dict[int, list[Block]] = {}
    for block in note.blocks:
        if block.is_task:
            continue
        if block.section_index in reflective_sections:
            grouped.setdefault(reflective_sections[block.section_index], []).append(block)
            continue
        tags = [t for t in block.tags if tag_matches(t, rules.tags)]
        if _word_count(block.text) < rules.min_words:
            continue
        if tags:
            out.append(Reflection("tag", block.text, _dedup_tags(block.tags + fm_tags), block.section, "#" + tags[0]))
            continue
        m = pattern_re.search(block.text) if pattern_re else None
        if m:
            out.append(Reflection("pattern", block.text, _dedup_tags(block.tags + fm_tags), block.section,
                                  re.sub(r"\s+", " ", m.group(0))))
            continue
        in_summary = (block.section or "").strip().rstrip(":").lower() in rules.summary_sections
        if fm_reflective and block.kind == "paragraph" and not in_summary \
                and _word_count(block.text) >= FRONTMATTER_MIN_WORDS:
            out.append(Reflection("tag", block.text, _dedup_tags(block.tags + fm_tags), block.section,
                                  "#" + fm_reflective[0]))

    for heading_idx, blocks in grouped.items():
        text = "\n".join(_block_text(b) for b in blocks)
        if _word_count(text) < rules.min_words:
            continue
        heading = note.headings[heading_idx - 1][1]
        tags = [t for b in blocks for t in b.tags]
        out.append(Reflection("section", text, _dedup_tags(tags + fm_tags), heading, heading))
    return out


def find_summary(note: ParsedNote, summary_sections: list[str], max_chars: int = 240) -> str | None:
    """First paragraph or items of the note's day-summary section, shortened for the user turn."""
    wanted = {s.strip().lower() for s in summary_sections}
    parts = [b.text for b in note.blocks if b.section and b.section.strip().rstrip(":").lower() in wanted]
    if not parts:
        return None
    summary = " ".join(parts)
    if len(summary) > max_chars:
        summary = summary[:max_chars].rsplit(" ", 1)[0] + "..."
    return summary
