"""Settings-level glue: find the candidate, the live model and the base, evaluate, decide, save.

`run_evaluation` is what the Dagster step and `forge eval` call; it knows ForgeSettings and the files other
parts write (the export manifest, serving's deployment record), nothing of Dagster.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forge_pipeline.evaluation.gate import GateThresholds, decide, save_evaluation
from forge_pipeline.evaluation.nightly import markdown
from forge_pipeline.evaluation.probes import load_probes
from forge_pipeline.evaluation.report import EvaluationReport, GateDecision
from forge_pipeline.evaluation.served import Sampling, ServedModel


class EvaluationSetupError(RuntimeError):
    """What to evaluate cannot be found; the message says what is missing and what to run."""


@dataclass
class Candidate:
    model: ServedModel
    base: ServedModel
    adapter_dir: Path
    version: str | None = None


def live_model(settings) -> ServedModel | None:
    """The model serving has, as its deployment record says (FORGE_HOME/serving/deployments.json): an
    adapter on a base (path + base_path) or a full GGUF (path). None before the first deploy."""
    path = settings.serving_dir / "deployments.json"
    if not path.exists():
        return None
    try:
        current = (json.loads(path.read_text()) or {}).get("current") or {}
    except ValueError:
        return None
    if not current.get("path"):
        return None
    model = settings.from_home(current["path"])
    if current.get("base_path"):
        return ServedModel(gguf=settings.from_home(current["base_path"]), lora=model)
    return ServedModel(gguf=model)


def latest_candidate(settings, log: Callable[[str], None] = print) -> Candidate:
    """The latest export (adapter GGUF on its base GGUF, or a merged GGUF) and the base to compare with."""
    from forge_pipeline.export.manifest import read_last_export

    found = read_last_export(settings.models_dir, settings.home_dir)
    if found is None:
        raise EvaluationSetupError(f"no export under {settings.models_dir}; run `forge export` first")
    manifest, version_dir = found
    adapter_dir = settings.from_home(manifest.source_adapter.path)
    gguf = manifest.gguf_path(version_dir)
    base_gguf = manifest.base_path(settings.home_dir)
    if manifest.kind == "adapter" and base_gguf is not None:
        return Candidate(ServedModel(base_gguf, gguf), ServedModel(base_gguf), adapter_dir, manifest.version)
    return Candidate(ServedModel(gguf), ServedModel(base_gguf_for(adapter_dir, settings, log)), adapter_dir,
                     manifest.version)


def base_gguf_for(adapter_dir: Path, settings, log: Callable[[str], None] = print) -> Path:
    """The base model as a GGUF, for a merged candidate: H5's cached base GGUF when one exists, else an f16
    conversion of the base's Hugging Face folder, made once under base_models_dir."""
    from forge_pipeline.export.gguf import convert_to_gguf
    from forge_pipeline.files import sha256_text

    manifest = json.loads((Path(adapter_dir) / "manifest.json").read_text())
    base_path = manifest["base_model"]["path"]
    key = sha256_text(str(manifest["base_model"].get("fingerprint") or base_path))[:12]
    from forge_pipeline.training.turn_tokens import SEEDING_FORMAT

    out = settings.base_models_dir / f"eval-base-{key}-t{SEEDING_FORMAT}-f16.gguf"  # seeded turn rows: convert_to_gguf
    if not out.exists():
        log(f"converting the base model once for evaluation: {out.name}")
        convert_to_gguf(Path(base_path), out, "f16")
        for old in settings.base_models_dir.glob(f"eval-base-{key}-*f16.gguf"):  # an older seeding rule's (an 8B's: 16 GB)
            if old != out:
                old.unlink(missing_ok=True)
    return out


def run_evaluation(settings, candidate: Candidate | None = None, *, against: str = "live",
                   sampling: Sampling | None = None, log: Callable[[str], None] = print
                   ) -> tuple[EvaluationReport, GateDecision, Path]:
    """Evaluate the candidate (default: the latest export) against live (or base), decide, and save the
    report, decision and nightly markdown under settings.evaluation_dir. Returns them and their folder."""
    candidate = candidate or latest_candidate(settings, log)
    live = live_model(settings) if against == "live" else None
    if live is not None and live.gguf == candidate.model.gguf and live.lora == candidate.model.lora:
        log("the candidate is the live model already; comparing it with the base")
        live = None
    if not settings.eval_path.exists():
        raise EvaluationSetupError(f"{settings.eval_path}: no eval split; run `forge curate` first")
    report = evaluate_models_from_settings(settings, candidate, live, sampling, log)
    decision = decide(report, GateThresholds.from_settings(settings), against=against)
    folder = settings.evaluation_dir / report.candidate_key
    folder.mkdir(parents=True, exist_ok=True)
    save_evaluation(settings.evaluation_dir, report, decision, markdown(report, decision, folder))
    return report, decision, folder


def evaluate_models_from_settings(settings, candidate: Candidate, live: ServedModel | None,
                                  sampling: Sampling | None, log: Callable[[str], None]) -> EvaluationReport:
    from forge_pipeline.evaluation.evaluate import evaluate_models

    return evaluate_models(candidate.model, candidate.base, adapter_dir=candidate.adapter_dir,
                           eval_path=settings.eval_path, train_path=settings.curated_path, live=live,
                           probes=load_probes(settings.evaluation_probes_path), sampling=sampling,
                           max_examples=settings.evaluation_max_examples, cache_dir=settings.evaluation_dir, log=log)
