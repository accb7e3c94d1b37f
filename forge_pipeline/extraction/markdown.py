"""One note -> frontmatter + a flat list of prose blocks, from markdown-it-py's token stream.

Code (fenced, indented, inline), tables, raw HTML blocks and %% comments %% never reach a block's
text or tags; headings become the ``section`` context of the blocks under them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from forge_pipeline.extraction.obsidian import find_tags, normalize_inline, strip_callout_marker, tidy

_MD = MarkdownIt("commonmark", {"html": True}).enable("table")


class FrontmatterError(ValueError):
    """The YAML between the leading '---' lines does not parse."""


@dataclass
class Block:
    kind: str  # "paragraph" | "item"
    text: str  # what a reader sees: Obsidian markup normalized, code spans kept verbatim
    tags: list[str]  # tags written in the block outside code and comments, without '#'
    section: str | None  # nearest heading above, normalized
    section_level: int
    section_index: int  # which heading (0 = before any) the block sits under
    is_task: bool = False
    in_callout: bool = False


@dataclass
class ParsedNote:
    frontmatter: dict
    blocks: list[Block]
    headings: list[tuple[int, str]] = field(default_factory=list)  # (level, text), index = section_index - 1
    frontmatter_error: str | None = None


def split_frontmatter(text: str) -> tuple[str | None, str]:
    """(YAML source or None, body). Only a '---' on the very first line opens frontmatter."""
    if not text.startswith("---"):
        return None, text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return None, text
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1:])
    return None, text


def parse_frontmatter(source: str | None) -> dict:
    if source is None or not source.strip():
        return {}
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise FrontmatterError(f"frontmatter is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FrontmatterError(f"frontmatter must be a mapping, got {type(data).__name__}")
    return data


def frontmatter_tags(frontmatter: dict) -> list[str]:
    """Obsidian accepts ``tags``/``tag`` as a list or a comma/space separated string, with or without '#'."""
    raw = frontmatter.get("tags", frontmatter.get("tag"))
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
    return [str(t).strip().lstrip("#") for t in items if str(t).strip().lstrip("#")]


class _InlineRenderer:
    """Renders inline tokens to text, carrying the %% comment state across tokens and blocks."""

    def __init__(self) -> None:
        self.in_comment = False

    def _uncommented(self, text: str) -> str:
        parts = text.split("%%")
        kept = []
        for i, part in enumerate(parts):
            if i > 0:
                self.in_comment = not self.in_comment
            if not self.in_comment:
                kept.append(part)
        return "".join(kept)

    def render(self, inline: Token) -> tuple[str, list[str]]:
        out: list[str] = []
        tags: list[str] = []
        for child in inline.children or []:
            if child.type == "text":
                visible = self._uncommented(child.content)
                tags += find_tags(visible)
                out.append(normalize_inline(visible))
            elif child.type in ("softbreak", "hardbreak"):
                out.append("\n" if child.type == "hardbreak" else " ")
            elif child.type == "code_inline" and not self.in_comment:
                out.append(f"`{child.content}`")
            elif child.type == "image" and not self.in_comment:
                continue  # attachments carry no reflection
            # html_inline, link/emphasis markers: dropped, their inner text tokens are kept
        return "".join(out), tags


def parse_note(text: str) -> ParsedNote:
    """Parse one note's text. Broken frontmatter is reported, and the body is still read."""
    fm_source, body = split_frontmatter(text)
    fm_error = None
    try:
        frontmatter = parse_frontmatter(fm_source)
    except FrontmatterError as e:
        frontmatter, fm_error = {}, str(e)

    tokens = _MD.parse(body)
    renderer = _InlineRenderer()
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    section, level = None, 0
    list_depth = blockquote_depth = table_depth = 0
    callout = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        if t == "heading_open":
            text_, _ = renderer.render(tokens[i + 1])
            section, level = tidy(text_), int(tok.tag[1])
            headings.append((level, section))
            i += 3
            continue
        if t == "bullet_list_open" or t == "ordered_list_open":
            list_depth += 1
        elif t == "bullet_list_close" or t == "ordered_list_close":
            list_depth -= 1
        elif t == "blockquote_open":
            blockquote_depth += 1
            nxt = tokens[i + 2] if i + 2 < len(tokens) else None
            callout = bool(nxt is not None and nxt.type == "inline" and nxt.content.lstrip().startswith("[!"))
        elif t == "blockquote_close":
            blockquote_depth -= 1
            callout = callout and blockquote_depth > 0
        elif t == "table_open":
            table_depth += 1
        elif t == "table_close":
            table_depth -= 1
        elif t == "inline" and table_depth == 0 and tokens[i - 1].type == "paragraph_open":
            text_, tags = renderer.render(tok)
            if callout:
                text_ = strip_callout_marker(text_)
            text_ = tidy(text_)
            is_task = list_depth > 0 and text_[:3].lower() in ("[ ]", "[x]")
            if text_:
                blocks.append(Block(kind="item" if list_depth > 0 else "paragraph", text=text_, tags=tags,
                                    section=section, section_level=level, section_index=len(headings),
                                    is_task=is_task, in_callout=callout))
        elif t in ("fence", "code_block", "html_block"):
            pass  # never prose; a %% inside code does not toggle comments either
        i += 1
    return ParsedNote(frontmatter=frontmatter, blocks=blocks, headings=headings, frontmatter_error=fm_error)
