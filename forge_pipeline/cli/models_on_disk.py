"""Which model `forge serve` and `forge up` start serving when none is named: the live one (serving's own
deployment record), else the newest export that passed its checks and was not refused by the evaluation
gate (and, for an export that left its fidelity to that gate, the job's adapter exports, that it passed). Plain functions over FORGE_HOME; no Dagster, no server needed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Choice:
    model: Optional[Path]  # what to pass as --model (None: let serving come back on its live model, or none)
    base: Optional[Path]  # the base GGUF an adapter goes on
    why: str  # one sentence for the user


def live_model(settings) -> Optional[dict]:
    """serving's record of the model it last ran (FORGE_HOME/serving/deployments.json), if that file still exists."""
    from serving.deployments import DeploymentHistory

    current = DeploymentHistory(settings.serving_dir / "deployments.json", settings.home_dir).read().get("current")
    return current if current and Path(current.get("path", "")).is_file() else None


def _gate_decision(settings, sha256: str) -> Optional[bool]:
    """The evaluation gate's decision on this file (stored by the nightly's evaluation step): False when any
    decision refused it, True when one deployed it, None when none judged it."""
    import json

    passed = None
    for decision in Path(settings.evaluation_dir).glob("*/decision.json"):
        try:
            data = json.loads(decision.read_text())
            report = json.loads((decision.parent / "report.json").read_text())
        except (OSError, ValueError):
            continue
        candidate = (report.get("models") or {}).get("candidate") or {}
        if sha256 in str(candidate):
            if data.get("deploy") is False:
                return False
            if data.get("deploy") is True:
                passed = True
    return passed


def newest_validated(settings) -> Optional[tuple[Path, Optional[Path], str]]:
    """(file, base GGUF for an adapter, version) of the newest export whose validation passed and which the
    gate did not refuse. An export that left its fidelity to the evaluation (the job's adapter exports) also
    needs the gate's passing decision: without one, nothing compared it with the trained model."""
    from forge_pipeline.export.manifest import list_versions
    from forge_pipeline.export.validate import (
        PARITY_BY_EVALUATION,
        degenerate_problems,
        load_problems,
        parity_problems,
    )

    for manifest, folder in reversed(list_versions(settings.models_dir)):
        v = manifest.validation
        if load_problems(v) or degenerate_problems(v) or parity_problems(v):
            continue
        decision = _gate_decision(settings, manifest.sha256)
        if decision is False or (v.get("parity_by") == PARITY_BY_EVALUATION and decision is not True):
            continue
        path = manifest.gguf_path(folder)
        base = manifest.base_path(settings.home_dir)
        if path.is_file() and (base is None or base.is_file()):
            return path, base, manifest.version
    return None


def serve_args(choice: Choice) -> list[str]:
    """`python -m serving` arguments for a choice: an adapter is loaded on its base at start-up, so serving's
    log names what it serves (it used to start on the bare base and get the adapter by a reload later)."""
    if not choice.model:
        return []
    return ["--model", str(choice.model)] + (["--base", str(choice.base)] if choice.base else [])


def choose_model(settings) -> Choice:
    live = live_model(settings)
    if live:
        return Choice(None, None, f"serving the live model {live.get('version') or Path(live['path']).name} "
                                  f"(deployed {live.get('loaded_at') or live.get('at') or 'earlier'})")
    found = newest_validated(settings)
    if found:
        path, base, version = found
        return Choice(path, base, f"no model deployed yet: serving the newest validated export {version}")
    return Choice(None, None, "no model yet: serving starts without one (run `dg launch --job forge_job`; "
                              "the deploy sensor, or `forge reload`, loads the result)")
