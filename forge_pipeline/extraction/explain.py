"""`forge extract --explain [NOTE]`: why each paragraph of a note is, or is not, in the training data;
for the whole vault, which notes gave nothing and the most common reason. Private text is never shown."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from forge_pipeline.extraction.detection import analyze_note
from forge_pipeline.extraction.inventory import NoteFile, ScanOptions, scan_vault
from forge_pipeline.extraction.markdown import parse_note, split_frontmatter
from forge_pipeline.extraction.note import NoteOptions, decode_note, extract_note
from forge_pipeline.extraction.optout import note_private_reason, private_blocks

PREVIEW = 70


def _preview(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= PREVIEW else one_line[:PREVIEW - 3] + "..."


def find_note(notes: list[NoteFile], query: str) -> NoteFile | None:
    """A note by vault-relative path, with or without ``.md``, or by its file name alone."""
    q = query.strip().strip("/")
    for n in notes:
        if n.rel_path in (q, q + ".md"):
            return n
    by_name = [n for n in notes if Path(n.rel_path).stem.lower() == Path(q).stem.lower()]
    return by_name[0] if len(by_name) == 1 else None


def explain_note(vault: Path, query: str, opts: NoteOptions, scan_opts: ScanOptions) -> list[str]:
    scan = scan_vault(vault, options=scan_opts)
    note_file = find_note(scan.notes, query)
    if note_file is None:
        skipped = [s for s in scan.skipped if s["file"].rstrip("/") in (query, query + ".md")]
        if skipped:
            return [f"{query}: not read ({skipped[0]['reason']})"]
        return [f"{query}: no such note in {vault} (or it is private, excluded, or a link out of the vault)"]
    text, warning = decode_note(note_file.path.read_bytes())
    note = parse_note(text.lstrip("\ufeff"))
    lines = [f"{note_file.rel_path}:"] + ([f"  warning: {warning}"] if warning else [])
    if note.frontmatter_error:
        lines.append(f"  warning: {note.frontmatter_error}")
    private = note_private_reason(note, split_frontmatter(text)[0], opts.private_tags)
    if private:
        return lines + [f"  the whole note is private ({private}): nothing in it is used, and nothing is shown"]
    mask, _ = private_blocks(note, opts.private_tags)
    analysis = analyze_note(note, opts.rules, mask)
    for v in analysis.verdicts:
        where = f"[{v.block.section}] " if v.block.section else ""
        if v.outcome == "private":
            lines.append(f"  - private      {where}(text not shown): marked private")
            continue
        label = {"tag": "EXAMPLE tag", "pattern": "EXAMPLE phrase", "in section": "IN SECTION"}.get(v.outcome, "no")
        lines.append(f"  - {label:12s} {where}\"{_preview(v.block.text)}\": {v.reason}")
    kinds = Counter(r.kind for r in analysis.reflections)
    lines.append(f"  => {len(analysis.reflections)} examples" + (f" {dict(kinds)}" if kinds else ""))
    return lines


def explain_vault(vault: Path, opts: NoteOptions, scan_opts: ScanOptions, limit: int = 50) -> list[str]:
    """The notes that gave no example, each with the most common reason among its paragraphs."""
    scan = scan_vault(vault, options=scan_opts)
    empty = []
    for n in scan.notes:
        try:
            raw = n.path.read_bytes()
        except OSError as e:
            empty.append(f"  {n.rel_path}: unreadable ({e.strerror or e})")
            continue
        result = extract_note(n.rel_path, raw, opts)
        if result.private or result.examples:
            continue
        if result.skipped:
            empty.append(f"  {n.rel_path}: {result.skipped}")
            continue
        note = parse_note(decode_note(raw)[0])
        mask, _ = private_blocks(note, opts.private_tags)
        reasons = Counter(v.reason for v in analyze_note(note, opts.rules, mask).verdicts if v.outcome == "no")
        why = f"{reasons.most_common(1)[0][0]} ({sum(reasons.values())} paragraphs)" if reasons else "no prose"
        empty.append(f"  {n.rel_path}: {why}")
    head = f"{len(empty)} of {len(scan.notes)} notes gave no example"
    tail = [f"  ... and {len(empty) - limit} more"] if len(empty) > limit else []
    return [head + (":" if empty else "."), *empty[:limit], *tail,
            "`forge extract --explain NOTE` shows the verdict for each paragraph of one note."]
