"""The per-example redaction report shown in the stats and the UI: counts by type, never the values.

Each extracted row carries ``redactions`` ({type: count}, its title, summary, section, path and tags
included; forge_pipeline/extraction/note.py). These functions summarise rows for Dagster's asset metadata
and the curation stats; they read only the counts and the already-redacted ``source_file``.
"""
from __future__ import annotations

from collections import Counter


def redaction_totals(rows: list[dict]) -> dict:
    """{"examples": n, "redacted_examples": n with any redaction, "by_type": {type: count}}."""
    by_type: Counter = Counter()
    redacted = 0
    for row in rows:
        counts = row.get("redactions") or {}
        redacted += bool(counts)
        by_type.update({k: int(v) for k, v in counts.items()})
    return {"examples": len(rows), "redacted_examples": redacted, "by_type": dict(sorted(by_type.items()))}


def redaction_table(rows: list[dict], limit: int = 50) -> tuple[list[tuple[str, str, str, str]], tuple[str, ...]]:
    """(table rows, header): one line per example with redactions, most redacted first."""
    redacted = [r for r in rows if r.get("redactions")]
    redacted.sort(key=lambda r: (-sum(r["redactions"].values()), r.get("source_file", ""), r.get("id", "")))
    lines = [(r.get("id", ""), r.get("source_file", ""), r.get("kind", ""),
              ", ".join(f"{k} {v}" for k, v in sorted(r["redactions"].items()))) for r in redacted[:limit]]
    return lines, ("example", "source (redacted)", "kind", "redactions by type")
