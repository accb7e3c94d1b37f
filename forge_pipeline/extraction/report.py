"""What an extraction run did, as a typed report (like curation's), plus hints when it found little.

The report holds counts, file names, reasons and warnings, never note text: it is written next to the
JSONL, shown by `forge extract` and turned into Dagster metadata. Private notes are counted by reason and
never named.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Below this many examples a vault probably does not write reflections the way the rules expect.
FEW_EXAMPLES = 20


@dataclass
class ExtractionReport:
    vault: str
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_tag: dict[str, int] = field(default_factory=dict)
    notes_scanned: int = 0
    notes_parsed: int = 0
    notes_from_cache: int = 0
    notes_without_examples: int = 0
    notes_skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    warnings: list[dict] = field(default_factory=list)  # {"file", "problem"}
    redactions: dict[str, int] = field(default_factory=dict)
    private_notes: dict[str, int] = field(default_factory=dict)  # reason -> notes excluded
    private_blocks: dict[str, int] = field(default_factory=dict)  # reason -> paragraphs/items excluded
    hints: list[str] = field(default_factory=list)
    output: str = ""
    stats_path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    # Scripts written against the dict that extract_training_data used to return keep working.
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    def summary_lines(self) -> list[str]:
        lines = [f"extracted {self.total} examples from {self.notes_scanned} notes ({self.notes_parsed} parsed, "
                 f"{self.notes_from_cache} from cache)" + (f" -> {self.output}" if self.output else ""),
                 f"by kind: {self.by_kind or 'none'}  redactions: {self.redactions or 'none'}"]
        if self.private_notes or self.private_blocks:
            notes = sum(self.private_notes.values())
            blocks = sum(self.private_blocks.values())
            lines.append(f"private, excluded: {notes} notes {self.private_notes or ''} and {blocks} paragraphs or "
                         f"items {self.private_blocks or ''}".replace("  ", " "))
        for s in self.notes_skipped:
            lines.append(f"skipped: {s['file']}: {s['reason']}")
        return lines


def hints_for(report: ExtractionReport, tags: list[str], patterns: list[str], sections: list[str]) -> list[str]:
    """Concrete next steps when a vault yields nothing or very little."""
    if report.total >= FEW_EXAMPLES:
        return []
    head = (f"only {report.total} examples were found" if report.total else "no examples were found") + \
        f" in {report.notes_scanned} notes."
    show = ", ".join
    return [
        head,
        f"Tags looked for (inline, on a heading, or in frontmatter): {show('#' + t for t in tags[:10])}"
        " - set FORGE_REFLECTION_TAGS to yours (a JSON list).",
        f"Phrasings looked for: {show(repr(p) for p in patterns[:8])}, ... ({len(patterns)} in all) - "
        "FORGE_REFLECTION_PATTERNS.",
        f"Headings whose whole section is a reflection: {show(repr(s) for s in sections[:8])} - "
        "FORGE_REFLECTION_SECTIONS.",
        "Paragraphs shorter than FORGE_MIN_UNIT_WORDS words, task lines, timestamped log lines and quotations "
        "are never examples.",
        "Run `forge extract --explain NOTE` to see, paragraph by paragraph, which rule fired or why none did; "
        "`forge extract --explain` lists the notes that gave nothing.",
    ]
