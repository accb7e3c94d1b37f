"""Pure validators behind the data asset checks: each returns the problems it found (empty = pass)."""
from __future__ import annotations

import re
from pathlib import Path

from forge_pipeline.curation.dedup import normalize_for_dedup
from forge_pipeline.privacy.check import row_problems

KINDS = {"tag", "pattern", "section"}
ROLES = ("system", "user", "assistant")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def schema_problems(row: dict) -> list[str]:
    problems = []
    msgs = row.get("messages")
    if not isinstance(msgs, list) or [m.get("role") if isinstance(m, dict) else None for m in msgs] != list(ROLES):
        problems.append("messages must be [system, user, assistant]")
    elif not all(isinstance(m.get("content"), str) and m["content"].strip() for m in msgs):
        problems.append("every message needs non-empty string content")
    if not isinstance(row.get("source_file"), str) or not row["source_file"] or row["source_file"].startswith("/") \
            or "\\" in row["source_file"]:
        problems.append("source_file must be a vault-relative POSIX path")
    tags = row.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.startswith("#") for t in tags):
        problems.append("tags must be a list of '#tag' strings")
    if row.get("date") is not None and not (isinstance(row["date"], str) and DATE_RE.match(row["date"])):
        problems.append("date must be YYYY-MM-DD or null")
    if not isinstance(row.get("id"), str) or not re.fullmatch(r"[0-9a-f]{16}", row["id"]):
        problems.append("id must be a 16-hex-digit content hash")
    if row.get("kind") not in KINDS:
        problems.append(f"kind must be one of {sorted(KINDS)}")
    if "section" not in row:
        problems.append("section is missing")
    return problems


def validate_jsonl_rows(rows: list[dict], path: Path | str = "") -> list[str]:
    out = []
    for i, row in enumerate(rows, 1):
        out += [f"{path}:{i}: {p}" for p in schema_problems(row)]
    return out


def personal_data_problems(rows: list[dict]) -> list[str]:
    """Personal data left in any field of any row, found by a detector independent of the redactor
    (forge_pipeline/privacy/check.py), so what the redactor misses is caught. Never quotes the value."""
    return [p for row in rows for p in row_problems(row)]


def overlap_problems(train: list[dict], evals: list[dict]) -> list[str]:
    train_ids = {r["id"] for r in train}
    train_texts = {normalize_for_dedup(r["messages"][-1]["content"]) for r in train}
    out = [f"{r['id']} is in both train and eval" for r in evals if r["id"] in train_ids]
    out += [f"{r['id']} (eval) has the same text as a train example" for r in evals
            if r["id"] not in train_ids and normalize_for_dedup(r["messages"][-1]["content"]) in train_texts]
    return out
