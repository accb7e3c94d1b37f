"""One note -> frontmatter + a flat list of prose blocks, from markdown-it-py's token stream.

Code (fenced, indented, inline), tables, raw HTML blocks and %% comments %% never reach a block's
text or tags; headings become the ``section`` context of the blocks under them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from forge_pipeline.extraction.obsidian import find_tags, normalize_inline, strip_callout_marker, tidy

_MD = MarkdownIt("commonmark", {"html": True}).enable("table")


class FrontmatterError(ValueError):
    """The YAML between the leading '---' lines does not parse."""


# Frontmatter is a few lines of metadata; anything this large is not something a person wrote by hand.
MAX_FRONTMATTER_CHARS = 64_000


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases. A 440-byte "billion laughs" (nine levels of ``&a [*prev x 9]``) builds
    fast because the loader shares the aliased nodes, then expands to gigabytes the moment anything walks
    it (``str(frontmatter["title"])`` ran past 180 s and 3 GB). Obsidian never writes aliases, so the
    first one rejects the frontmatter (the body is still read)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise FrontmatterError(f"frontmatter uses a YAML alias (*{event.anchor}, line "
                                   f"{event.start_mark.line + 2}); aliases are not read, as they can expand "
                                   "without limit")
        return super().compose_node(parent, index)


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
    quoted: bool = False  # inside a `>` quotation of someone else (attributed, or wholly in quotation marks)
    link_only: bool = False  # nothing but links and separators: navigation, not prose


@dataclass
class ParsedNote:
    frontmatter: dict
    blocks: list[Block]
    headings: list[tuple[int, str]] = field(default_factory=list)  # (level, text), index = section_index - 1
    frontmatter_error: str | None = None
    heading_tags: list[list[str]] = field(default_factory=list)  # tags written on each heading, same index


_FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", _NoAliasLoader)


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
    if len(source) > MAX_FRONTMATTER_CHARS:
        raise FrontmatterError(f"frontmatter is {len(source)} characters, over the {MAX_FRONTMATTER_CHARS} read")
    # libyaml's loader is ~10x faster (frontmatter was 15% of extraction time) but cannot be taught to
    # refuse aliases; without '*' no alias can occur, so only the rest goes through the Python loader.
    loader = _FAST_SAFE_LOADER if "*" not in source else _NoAliasLoader
    try:
        data = yaml.load(source, Loader=loader)  # noqa: S506 - both are safe loaders
    except RecursionError:
        raise FrontmatterError("frontmatter is nested too deeply to read") from None
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

    def render(self, inline: Token, drop_first_line: bool = False) -> tuple[str, list[str]]:
        """(visible text, tags). ``drop_first_line``: a callout's first line is its marker and title
        (``> [!note] Reminder``), which must not be glued onto the prose below it."""
        out: list[str] = []
        tags: list[str] = []
        for child in inline.children or []:
            if drop_first_line:
                if child.type in ("softbreak", "hardbreak"):
                    drop_first_line = False
                elif child.type == "text":
                    tags += find_tags(self._uncommented(child.content))
                continue
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
    heading_tags: list[list[str]] = []
    section, level = None, 0
    list_depth = blockquote_depth = table_depth = 0
    callout = callout_title = False
    quote_start = None  # index in blocks where the outermost plain `>` quotation began
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        if t == "heading_open":
            text_, tags = renderer.render(tokens[i + 1])
            section, level = tidy(text_), int(tok.tag[1])
            headings.append((level, section))
            heading_tags.append(tags)
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
            callout_title = callout
            if not callout and blockquote_depth == 1:
                quote_start = len(blocks)
        elif t == "blockquote_close":
            blockquote_depth -= 1
            callout = callout and blockquote_depth > 0
            if blockquote_depth == 0 and quote_start is not None:
                _mark_quotation(blocks[quote_start:])
                quote_start = None
        elif t == "table_open":
            table_depth += 1
        elif t == "table_close":
            table_depth -= 1
        elif t == "inline" and table_depth == 0 and tokens[i - 1].type == "paragraph_open":
            text_, tags = renderer.render(tok, drop_first_line=callout_title)
            if callout:
                text_ = strip_callout_marker(text_)
            callout_title = False
            text_ = tidy(text_)
            is_task = list_depth > 0 and text_[:3].lower() in ("[ ]", "[x]")
            if text_:
                blocks.append(Block(kind="item" if list_depth > 0 else "paragraph", text=text_, tags=tags,
                                    section=section, section_level=level, section_index=len(headings),
                                    is_task=is_task, in_callout=callout,
                                    link_only=_links_only(tok.content)))
        elif t in ("fence", "code_block", "html_block"):
            pass  # never prose; a %% inside code does not toggle comments either
        i += 1
    return ParsedNote(frontmatter=frontmatter, blocks=blocks, headings=headings, frontmatter_error=fm_error,
                      heading_tags=heading_tags)


# All linear: no repeated class can start the next attempt (see obsidian.py).
_LINKS_RE = re.compile(r"!?\[\[[^\[\]\n]*\]\]|!?\[[^\[\]\n]*\]\([^()\s]*\)|<?https?://[^\s>]+>?")
_SEPARATORS_RE = re.compile(r"[\s,;|·•/→←↑>-]+")
# "— Donella Meadows", "-- Seneca", "~ my grandmother": an attribution line or tail.
_ATTRIBUTION_RE = re.compile(r"(?:^|\s)(?:—|–|―|--|~)\s*[^\s—–―~-][^\n]{0,80}$")
_QUOTED_RE = re.compile(r"^[\"“„«'‘][^\n]*[\"”»'’]\W{0,3}$", re.S)


def _links_only(source: str) -> bool:
    """A paragraph or item made of links and separators only (a link list, "[[A]] · [[B]]")."""
    rest = _LINKS_RE.sub("", source)
    return rest != source and not _SEPARATORS_RE.sub("", rest)


def _mark_quotation(quote: list[Block]) -> None:
    """A plain `>` block quoting someone else: attributed (its last line is "— Name") or wholly in quotation
    marks. Its words are not the writer's, even when they say "I think". A `>` without either is the
    writer's own emphasis and stays."""
    if not quote:
        return
    text = " ".join(b.text for b in quote).strip()
    if _ATTRIBUTION_RE.search(quote[-1].text) or _QUOTED_RE.match(text):
        for b in quote:
            b.quoted = True
