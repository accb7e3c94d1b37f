"""The nightly quality loop: evaluate base, live and candidate as served, and gate the deploy.

    from forge_pipeline.evaluation import ServedModel, evaluate_models, decide

Plain functions, no Dagster. Metric definitions: evaluation/metrics.py; gate rules: evaluation/gate.py.
Names are imported lazily so that importing the package stays cheap.
"""
from __future__ import annotations

_EXPORTS = {
    "ServedModel": "served", "Sampling": "served",
    "evaluate_models": "evaluate",
    "decide": "gate", "GateThresholds": "gate", "save_evaluation": "gate", "load_decision": "gate",
    "load_report": "gate", "latest_key": "gate", "history": "gate",
    "EvaluationReport": "report", "GateDecision": "report",
    "markdown": "nightly", "headline": "nightly", "table": "nightly",
    "run_evaluation": "run", "live_model": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"forge_pipeline.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
