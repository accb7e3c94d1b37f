"""Pure validators behind the data asset checks: each returns the problems it found (empty = pass).

``check_curated_set(settings)`` runs every blocking check on the curated set (schema, minimum examples,
personal data, train/eval disjoint) and returns a typed report. It is the one place those checks are run:
the Dagster asset checks (forge_pipeline/defs/data_checks.py) call its ``check_*`` functions one by one,
and `forge curate` / `forge train` call it whole, so the command line blocks training on what Dagster does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
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


def _answer(row: dict) -> str | None:
    try:
        return normalize_for_dedup(row["messages"][-1]["content"])
    except (KeyError, IndexError, TypeError, AttributeError):
        return None  # a schema problem, reported by the schema check


def overlap_problems(train: list[dict], evals: list[dict]) -> list[str]:
    train_ids = {r.get("id") for r in train} - {None}
    train_texts = {_answer(r) for r in train} - {None}
    out = [f"{r['id']} is in both train and eval" for r in evals if r.get("id") in train_ids]
    out += [f"{r.get('id')} (eval) has the same text as a train example" for r in evals
            if r.get("id") not in train_ids and _answer(r) in train_texts]
    return out


# ---- the curated set's blocking checks, shared by Dagster and the CLI ----------------------------------------

@dataclass(frozen=True)
class CheckOutcome:
    """One check's result. ``blocking``: a failure stops training (False: the check only warns)."""
    name: str
    problems: list[str]
    blocking: bool = True
    metadata: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


def check_schema(train: list[dict], evals: list[dict], names: tuple[str, str] = ("train", "eval")) -> CheckOutcome:
    return CheckOutcome("curated_jsonl_schema", validate_jsonl_rows(train, names[0])
                        + validate_jsonl_rows(evals, names[1]))


def check_minimum_examples(train: list[dict], evals: list[dict], minimum: int, severity: str = "ERROR") -> CheckOutcome:
    n = len(train) + len(evals)
    problems = [] if n >= minimum else [
        f"only {n} curated examples (train + eval), fewer than FORGE_MIN_CURATED_EXAMPLES={minimum}; "
        "write more reflections or lower the minimum (FORGE_MIN_EXAMPLES_SEVERITY=WARN makes this a warning)"]
    return CheckOutcome("minimum_curated_examples", problems, blocking=not severity.upper().startswith("WARN"),
                        metadata={"curated_examples": n, "minimum": minimum})


def check_personal_data(train: list[dict], evals: list[dict]) -> CheckOutcome:
    return CheckOutcome("no_personal_data_in_curated", personal_data_problems(train + evals))


def check_disjoint(train: list[dict], evals: list[dict]) -> CheckOutcome:
    return CheckOutcome("train_eval_disjoint", overlap_problems(train, evals))


@dataclass
class CuratedSetReport:
    train_path: str
    eval_path: str | None
    outcomes: list[CheckOutcome]

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.problems and o.blocking]

    @property
    def ok(self) -> bool:
        return not self.blocking_failures

    def problems(self) -> list[str]:
        """Every blocking problem, prefixed with its check's name."""
        return [f"{o.name}: {p}" for o in self.blocking_failures for p in o.problems]

    def lines(self, limit: int = 10) -> list[str]:
        out = []
        for o in self.outcomes:
            state = "passed" if o.passed else ("FAILED" if o.blocking else "warning")
            out.append(f"check {o.name}: {state}" + (f" ({len(o.problems)} problems)" if o.problems else ""))
            out += [f"  - {p}" for p in o.problems[:limit]]
            if len(o.problems) > limit:
                out.append(f"  ... and {len(o.problems) - limit} more")
        return out


def _rows(path: Path | None, missing_ok: bool) -> tuple[list[dict], list[str]]:
    from forge_pipeline.files import read_jsonl

    if path is None or (missing_ok and not Path(path).exists()):
        return [], []
    if not Path(path).exists():
        return [], [f"{path}: training data not found; run `forge curate` first"]
    try:
        return read_jsonl(path), []
    except (ValueError, UnicodeDecodeError) as e:
        return [], [str(e)]


def check_curated_set(settings, train_path: Path | None = None, eval_path: Path | None = None) -> CuratedSetReport:
    """Every blocking check on a curated set (default: the settings' curated train + eval files).

    A train file that is missing or not JSONL is itself a blocking schema problem; a missing eval file
    is an empty eval split."""
    train_path = Path(train_path) if train_path else settings.curated_path
    eval_path = Path(eval_path) if eval_path else (settings.eval_path if train_path == settings.curated_path else None)
    train, train_err = _rows(train_path, missing_ok=False)
    evals, eval_err = _rows(eval_path, missing_ok=True)
    schema = check_schema(train, evals, (train_path.name, eval_path.name if eval_path else "eval"))
    if train_err or eval_err:
        schema = CheckOutcome(schema.name, train_err + eval_err + schema.problems)
    outcomes = [schema,
                check_minimum_examples(train, evals, settings.min_curated_examples, settings.min_examples_severity),
                check_personal_data(train, evals),
                check_disjoint(train, evals)]
    return CuratedSetReport(str(train_path), str(eval_path) if eval_path else None, outcomes)


def curated_set_problems(settings, train_path: Path | None = None, eval_path: Path | None = None) -> list[str]:
    """The blocking problems of the curated set (empty: training may start)."""
    return check_curated_set(settings, train_path, eval_path).problems()
