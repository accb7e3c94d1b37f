"""Share of section examples whose answer carries a non-reflection tail, on a vault (default: the sample).

    .venv/bin/python bench/extraction_quality.py --label after [--vault PATH] [--out bench/results/extraction_quality.json]

A tail is a line that is navigation ("See also ...", "Related:"), a task, a contact line, or text about
code or tags; they are recognised here by plain string tests, independently of the extraction rules.
Run from an older checkout with ``--label before`` (same vault, same --out) to record the comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forge_pipeline.config import SAMPLE_VAULT, load_config  # noqa: E402
from forge_pipeline.extraction.extractor import TrainingDataExtractor  # noqa: E402

NAV = ("see also", "related:", "related notes", "links:", "back to")
TASK = ("- [ ]", "- [x]", "[ ]", "[x]")


def tail_kind(line: str) -> str | None:
    low = line.strip().lower()
    if low.startswith(NAV):
        return "navigation"
    if low.startswith(TASK):
        return "task"
    if low.startswith("contact") or "phone:" in low or "e-mail:" in low:
        return "contact"
    if "`#" in low:
        return "code or tag text"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--vault", default=str(SAMPLE_VAULT))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "extraction_quality.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        rows = TrainingDataExtractor(load_config(home=home, vault=args.vault), use_cache=False).extract()
    sections = [r for r in rows if r["kind"] == "section"]
    tails = {}
    for r in sections:
        kinds = sorted({k for line in r["messages"][-1]["content"].splitlines() if (k := tail_kind(line))})
        if kinds:
            tails[r["source_file"]] = kinds
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[args.label] = {"examples": len(rows), "section_examples": len(sections),
                        "section_examples_with_tail": len(tails),
                        "share_with_tail": round(len(tails) / len(sections), 3) if sections else None,
                        "tails": tails, "vault": "sample" if Path(args.vault) == SAMPLE_VAULT else args.vault,
                        "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data[args.label], indent=2))


if __name__ == "__main__":
    main()
