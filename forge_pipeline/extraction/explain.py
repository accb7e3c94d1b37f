"""`forge extract --explain [NOTE]`: why each paragraph of a note is, or is not, in the training data;
for the whole vault, which notes gave nothing and the most common reason.

What it prints goes to a terminal that may be logged or shared, so it follows the same rules as every stored
output: paths, headings, previews and warnings are shown redacted exactly as the training data would carry
them, and of an excluded note (private by frontmatter, folder or glob) nothing is printed but that it was
excluded and why - not its name, not even the name the user typed.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from forge_pipeline.extraction.detection import analyze_note
from forge_pipeline.extraction.inventory import NoteFile, ScanOptions, path_private_reason, scan_vault
from forge_pipeline.extraction.markdown import parse_note, split_frontmatter
from forge_pipeline.extraction.note import NoteOptions, decode_note, extract_note
from forge_pipeline.extraction.optout import note_private_reason, private_blocks
from forge_pipeline.extraction.redaction import redact
from forge_pipeline.privacy.names import shown_path

PREVIEW = 70


def _preview(text: str, regions: tuple[str, ...]) -> str:
    # redacted before it is cut: a secret cut in half would no longer be recognized
    one_line = " ".join(redact(text, regions)[0].split())
    return one_line if len(one_line) <= PREVIEW else one_line[:PREVIEW - 3] + "..."


def _excluded(reason: str) -> list[str]:
    return [f"the note you named is private ({reason}): it is excluded from every output, and nothing of it is "
            "shown"]


def find_note(notes: list[NoteFile], query: str) -> NoteFile | None:
    """A note by vault-relative path, with or without ``.md``, or by its file name alone."""
    q = query.strip().strip("/")
    for n in notes:
        if n.rel_path in (q, q + ".md"):
            return n
    by_name = [n for n in notes if Path(n.rel_path).stem.lower() == Path(q).stem.lower()]
    return by_name[0] if len(by_name) == 1 else None


def explain_note(vault: Path, query: str, opts: NoteOptions, scan_opts: ScanOptions) -> list[str]:
    regions = opts.phone_regions
    q = query.strip().strip("/")
    for candidate in (q, q + ".md"):
        reason = path_private_reason(candidate, scan_opts)
        if reason:
            return _excluded(reason)
    scan = scan_vault(vault, options=scan_opts)
    note_file = find_note(scan.notes, query)
    if note_file is None:
        skipped = [s for s in scan.skipped if s["file"].rstrip("/") in (q, q + ".md")]
        if skipped:
            return [f"{shown_path(q, regions)}: not read ({skipped[0]['reason']})"]
        # the name typed is not echoed: it may be the name of a private note the scan never lists
        return [f"no note matches that name in {vault} (or it is private, excluded, or a link out of the vault)"]
    text, warning = decode_note(note_file.path.read_bytes())
    note = parse_note(text.lstrip("\ufeff"))
    private = note_private_reason(note, split_frontmatter(text.lstrip("\ufeff"))[0], opts.private_tags)
    if private:
        return _excluded(private)
    lines = [f"{shown_path(note_file.rel_path, regions)}:"] + ([f"  warning: {warning}"] if warning else [])
    if note.frontmatter_error:
        lines.append(f"  warning: {redact(note.frontmatter_error, regions)[0]}")
    mask, _ = private_blocks(note, opts.private_tags)
    analysis = analyze_note(note, opts.rules, mask)
    for v in analysis.verdicts:
        if v.outcome == "private":
            lines.append("  - private      (text and heading not shown): marked private")
            continue
        where = f"[{redact(v.block.section, regions)[0]}] " if v.block.section else ""
        label = {"tag": "EXAMPLE tag", "pattern": "EXAMPLE phrase", "in section": "IN SECTION"}.get(v.outcome, "no")
        lines.append(f"  - {label:12s} {where}\"{_preview(v.block.text, regions)}\": {v.reason}")
    kinds = Counter(r.kind for r in analysis.reflections)
    lines.append(f"  => {len(analysis.reflections)} examples" + (f" {dict(kinds)}" if kinds else ""))
    return lines


def explain_vault(vault: Path, opts: NoteOptions, scan_opts: ScanOptions, limit: int = 50) -> list[str]:
    """The notes that gave no example, each with the most common reason among its paragraphs; private notes
    counted by reason."""
    regions = opts.phone_regions
    scan = scan_vault(vault, options=scan_opts)
    empty, private = [], Counter(scan.private)
    for n in scan.notes:
        name = shown_path(n.rel_path, regions)
        try:
            raw = n.path.read_bytes()
        except OSError as e:
            empty.append(f"  {name}: unreadable ({e.strerror or e})")
            continue
        result = extract_note(n.rel_path, raw, opts)
        if result.private:
            private[result.private] += 1
            continue
        if result.examples:
            continue
        if result.skipped:
            empty.append(f"  {name}: {result.skipped}")
            continue
        note = parse_note(decode_note(raw)[0].lstrip("\ufeff"))
        mask, _ = private_blocks(note, opts.private_tags)
        reasons = Counter(v.reason for v in analyze_note(note, opts.rules, mask).verdicts if v.outcome == "no")
        why = f"{reasons.most_common(1)[0][0]} ({sum(reasons.values())} paragraphs)" if reasons else "no prose"
        empty.append(f"  {name}: {why}")
    public = len(scan.notes) - sum(private.values()) + sum(scan.private.values())
    head = f"{len(empty)} of {public} notes gave no example"
    tail = [f"  ... and {len(empty) - limit} more"] if len(empty) > limit else []
    excluded = [f"{sum(private.values())} private notes excluded, not shown: {dict(sorted(private.items()))}"] \
        if private else []
    return [head + (":" if empty else "."), *empty[:limit], *tail, *excluded,
            "`forge extract --explain NOTE` shows the verdict for each paragraph of one note."]
