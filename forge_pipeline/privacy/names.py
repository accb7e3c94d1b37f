"""Names that reach logs and stores: file paths and tags, redacted like the text they come with.

A file name can hold an e-mail (``Inbox/Thread with maya.lee@example.org.md``) and a tag a token
(``#ghp_...``). Rows carry them (``source_file``, ``tags``), and so do the warnings and skip lists that go to
the CLI, the stats file, the vault inventory, Dagster's event log and asset metadata: every one of those
goes through here. A path keeps its folders and its ``.md`` (which the e-mail recognizer would otherwise read
as Moldova's domain); a tag keeps its ``#``.
"""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable

from forge_pipeline.extraction.redaction import DEFAULT_PHONE_REGIONS, redact

Redact = Callable[..., tuple[str, Counter]]


def redact_path(rel_path: str, phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
                redact_fn: Redact = redact) -> tuple[str, Counter]:
    """(path with each secret in a folder or file name replaced, counts by type)."""
    regions, counts, parts = tuple(phone_regions), Counter(), []
    for part in rel_path.split("/"):
        stem, dot, ext = part.rpartition(".") if part.endswith(".md") else (part, "", "")
        clean, c = redact_fn(stem, regions)
        counts.update(c)
        parts.append(clean + dot + ext)
    return "/".join(parts), counts


def redact_tags(tags: Iterable[str], phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
                redact_fn: Redact = redact) -> tuple[list[str], Counter]:
    """('#tag' strings with secrets replaced, counts by type); order kept, duplicates made by redaction dropped."""
    regions, counts, out = tuple(phone_regions), Counter(), []
    for tag in tags:
        body = tag[1:] if tag.startswith("#") else tag
        clean, c = redact_fn(body, regions)
        counts.update(c)
        if "#" + clean not in out:
            out.append("#" + clean)
    return out, counts


@functools.lru_cache(maxsize=8192)
def shown_path(rel_path: str, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str:
    """The form of a vault path that may be logged or stored."""
    return redact_path(rel_path, phone_regions)[0]


def redact_file_entries(entries: Iterable[dict], phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
                        key: str = "file") -> list[dict]:
    """Warning/skip entries ({"file": ..., ...}) with the file named by its shown path."""
    regions = tuple(phone_regions)
    return [{**e, key: shown_path(e[key], regions)} if isinstance(e.get(key), str) else dict(e) for e in entries]
