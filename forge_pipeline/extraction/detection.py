"""Which blocks of a parsed note are reflections, and of which kind, with a verdict for every block.

The unit is the paragraph or list item that holds the reflection; a whole section when its heading is
one of the configured reflection headings (a journal's "## Reflection") or carries a reflection tag
(``## Night shift thoughts #reflection``). Precedence: section, then tag, then phrasing. A frontmatter
reflection tag marks the note's longer prose paragraphs (not its lists, not its day summary).

Not reflections, whatever they say: task lines, timestamped log lines ("02:10 I think the pharmacy..."),
quotations of someone else (an attributed ``>`` quote), and private blocks (see optout.py). A reflection
section ends where the reflection ends: navigation ("See also ..."), link lists, task, contact and
code-about-tags lines are left out of its text (about 10% of the sample vault's section examples carried
such a tail; bench/results/extraction_quality.json).

Every block gets a ``Verdict`` so ``forge extract --explain`` can say why a paragraph is or is not in the
model.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from forge_pipeline.extraction.markdown import Block, ParsedNote, frontmatter_tags
from forge_pipeline.extraction.obsidian import tag_matches

# A frontmatter tag alone is weaker evidence than an inline one: demand real prose.
FRONTMATTER_MIN_WORDS = 15

# "02:10 ...", "[14:05] ...", "9.30am - ...", "2026-03-14 21:40 ...": a log entry, not a reflection.
TIMESTAMP_RE = re.compile(r"^\s*(?:\[?\d{4}-\d{2}-\d{2}[ T])?\[?\d{1,2}[:.h]\d{2}(?::\d{2})?\s?(?:[ap]\.?m\.?)?\]?"
                          r"(?=[\s\-–—:|,]|$)", re.I)
NAVIGATION_RE = re.compile(r"^\s*(?:see also|related(?: notes?)?|links?|back to|up|next|previous|prev|source|via|"
                           r"references?|more in|cf\.?)\b\s*[:\-–—]?", re.I)
CONTACT_RE = re.compile(r"^\s*(?:contact|e-?mail|phone|tel(?:ephone)?|mobile|cell|address|reach \w+ at)\b"
                        r"[^:\n]{0,40}:", re.I)
CODE_TAG_RE = re.compile(r"`#[\w/-]+`")


@dataclass
class Reflection:
    kind: str  # "tag" | "pattern" | "section"
    text: str
    tags: list[str]  # with '#', as written, deduplicated in order
    section: str | None
    matched: str  # the tag, phrase or heading that made it a reflection


@dataclass
class Verdict:
    """What happened to one block: ``example`` (kind), part of a section example, or why not."""
    block: Block
    outcome: str  # "tag" | "pattern" | "section" | "in section" | "private" | "no"
    reason: str


@dataclass
class NoteAnalysis:
    reflections: list[Reflection] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


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

    @functools.cached_property  # built once per rules object: rebuilding it per note was ~4% of extraction
    def pattern_re(self) -> re.Pattern | None:
        if not self.patterns:
            return None
        alts = "|".join(re.escape(p.strip()).replace(r"\ ", r"\s+").replace("'", "['’]")
                        for p in sorted(self.patterns, key=len, reverse=True))
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


def _heading_key(text: str) -> str:
    return text.strip().rstrip(":").lower()


def section_tail_reason(block: Block) -> str | None:
    """Why a block under a reflection heading is not part of the reflection (None: it is)."""
    if block.is_task:
        return "task line"
    if block.link_only or NAVIGATION_RE.match(block.text):
        return "navigation or link list"
    if CONTACT_RE.match(block.text):
        return "contact line"
    if CODE_TAG_RE.search(block.text):
        return "text about code or tags"
    if block.quoted:
        return "quotation of someone else"
    if TIMESTAMP_RE.match(block.text):
        return "timestamped log line"
    return None


def _reflective_sections(note: ParsedNote, rules: DetectionRules) -> dict[int, tuple[int, str]]:
    """section_index -> (index of the owning reflective heading, what made it reflective)."""
    out: dict[int, tuple[int, str]] = {}
    owner, owner_level, why = None, 0, ""
    for idx, (level, text) in enumerate(note.headings, start=1):
        if owner is not None and level <= owner_level:
            owner = None
        if owner is None:
            tags = note.heading_tags[idx - 1] if idx - 1 < len(note.heading_tags) else []
            tagged = [t for t in tags if tag_matches(t, rules.tags)]
            if _heading_key(text) in rules.sections or tagged:
                owner, owner_level = idx, level
                why = f"#{tagged[0]} on the heading" if tagged else f'reflection heading "{text}"'
        if owner is not None:
            out[idx] = (owner, why)
    return out


def analyze_note(note: ParsedNote, rules: DetectionRules, private_mask: list[bool] | None = None,
                 check: Callable[[], None] | None = None) -> NoteAnalysis:
    """Reflections of a note plus a verdict for each block. ``private_mask[i]`` excludes block i entirely;
    ``check`` is called once per block (the per-note time budget)."""
    pattern_re = rules.pattern_re
    fm_tags = frontmatter_tags(note.frontmatter)
    fm_reflective = [t for t in fm_tags if tag_matches(t, rules.tags)]
    sections = _reflective_sections(note, rules)
    result = NoteAnalysis()
    grouped: dict[int, list[Block]] = {}

    def verdict(block: Block, outcome: str, reason: str) -> None:
        result.verdicts.append(Verdict(block, outcome, reason))

    for i, block in enumerate(note.blocks):
        if check is not None:
            check()
        if private_mask is not None and private_mask[i]:
            verdict(block, "private", "marked private")
            continue
        if block.section_index in sections:
            owner, why = sections[block.section_index]
            tail = section_tail_reason(block)
            if tail:
                verdict(block, "no", f"{tail}: left out of the reflection section")
            else:
                grouped.setdefault(owner, []).append(block)
                verdict(block, "in section", why)
            continue
        if block.is_task:
            verdict(block, "no", "task line")
            continue
        tags = [t for t in block.tags if tag_matches(t, rules.tags)]
        words = _word_count(block.text)
        if words < rules.min_words:
            verdict(block, "no", f"too short ({words} words < {rules.min_words})")
            continue
        if tags:
            result.reflections.append(Reflection("tag", block.text, _dedup_tags(block.tags + fm_tags),
                                                 block.section, "#" + tags[0]))
            verdict(block, "tag", f"tag #{tags[0]}")
            continue
        if block.quoted:
            verdict(block, "no", "quotation of someone else")
            continue
        if TIMESTAMP_RE.match(block.text):
            verdict(block, "no", "timestamped log line")
            continue
        m = pattern_re.search(block.text) if pattern_re else None
        if m:
            phrase = re.sub(r"\s+", " ", m.group(0))
            result.reflections.append(Reflection("pattern", block.text, _dedup_tags(block.tags + fm_tags),
                                                 block.section, phrase))
            verdict(block, "pattern", f'phrasing "{phrase}"')
            continue
        in_summary = _heading_key(block.section or "") in rules.summary_sections
        if fm_reflective and block.kind == "paragraph" and not in_summary and words >= FRONTMATTER_MIN_WORDS:
            result.reflections.append(Reflection("tag", block.text, _dedup_tags(block.tags + fm_tags),
                                                 block.section, "#" + fm_reflective[0]))
            verdict(block, "tag", f"frontmatter tag #{fm_reflective[0]} on a paragraph of {words} words")
            continue
        if fm_reflective:
            why = ("the day's summary" if in_summary else "a list item" if block.kind == "item"
                   else f"under {FRONTMATTER_MIN_WORDS} words")
            verdict(block, "no", f"frontmatter tag #{fm_reflective[0]}, but {why}")
        else:
            verdict(block, "no", "no reflection tag, phrasing or heading")

    for heading_idx, blocks in grouped.items():
        text = "\n".join(_block_text(b) for b in blocks)
        if _word_count(text) < rules.min_words:
            for v in result.verdicts:
                if v.block in blocks:
                    v.outcome, v.reason = "no", f"reflection section under {rules.min_words} words"
            continue
        heading = note.headings[heading_idx - 1][1]
        tags = [t for b in blocks for t in b.tags] + note.heading_tags[heading_idx - 1]
        result.reflections.append(Reflection("section", text, _dedup_tags(tags + fm_tags), heading,
                                             sections[heading_idx][1]))
    return result


def detect_reflections(note: ParsedNote, rules: DetectionRules, private_mask: list[bool] | None = None
                       ) -> list[Reflection]:
    return analyze_note(note, rules, private_mask).reflections


def find_summary(note: ParsedNote, summary_sections: list[str], max_chars: int = 240,
                 private_mask: list[bool] | None = None) -> str | None:
    """First paragraph or items of the note's day-summary section, shortened for the user turn."""
    wanted = {s.strip().lower() for s in summary_sections}
    parts = [b.text for i, b in enumerate(note.blocks)
             if b.section and _heading_key(b.section) in wanted and not (private_mask and private_mask[i])]
    if not parts:
        return None
    summary = " ".join(parts)
    if len(summary) > max_chars:
        summary = summary[:max_chars].rsplit(" ", 1)[0] + "..."
    return summary
