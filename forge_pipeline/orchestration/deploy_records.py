"""What the deploy sensor and the deployed_model asset read from the Dagster instance: the newest model whose
gate passed, and the deploy runs already made for it."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from forge_pipeline.orchestration.deploy_target import Target

# The asset whose materialization, in a run that succeeded (so the export's blocking checks passed), makes a
# model deployable unless its metadata says deploy=False (the evaluation gate refused it); the metadata names
# the file (path, sha256, version; base_path for an adapter).
GATE_ASSET = dg.AssetKey("model_evaluation")
DEPLOY_TAG = {"forge/deploy": "true"}  # on every deploy run the sensor requests
SHA_TAG = "forge/model_sha256"
REFUSED_TAG = {"forge/deploy_refused": "true"}  # added to a deploy run that serving answered with a refusal
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def metadata_value(md, key):
    v = md.get(key)
    return getattr(v, "value", getattr(v, "text", v))


def newest_passed(instance: dg.DagsterInstance, log=None, scan: int = 25) -> Target | None:
    """The newest GATE_ASSET materialization from a finished, successful run whose file is there. A run still
    going (its file may still be written, its checks not yet run) or failed is passed over."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=GATE_ASSET), limit=scan,
                                              ascending=False).records
    for record in records:
        run = instance.get_run_by_id(record.run_id) if record.run_id else None
        md = record.asset_materialization.metadata
        if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
            continue
        if metadata_value(md, "deploy") is False:
            continue  # refused by the evaluation gate
        sha, path = metadata_value(md, "sha256"), metadata_value(md, "path")
        if not sha or not path or not Path(path).is_file():
            if log:
                log(f"passing over the model of run {record.run_id}: its file {path} is gone")
            continue
        return Target(sha256=sha, path=str(path), version=metadata_value(md, "version"),
                      base_path=metadata_value(md, "base_path"))
    return None


def deploy_runs(instance: dg.DagsterInstance, statuses, sha256: str | None = None, refused: bool = False) -> int:
    """Deploy runs (tagged DEPLOY_TAG) in these states, for one model when ``sha256`` is given."""
    tags = {**DEPLOY_TAG, **({SHA_TAG: sha256} if sha256 else {}), **(REFUSED_TAG if refused else {})}
    return instance.get_runs_count(dg.RunsFilter(statuses=statuses, tags=tags))
