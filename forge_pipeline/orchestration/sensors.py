"""Deploy each new GGUF whose checks passed: one deploy run per model, keyed by its sha256."""
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from forge_pipeline.orchestration.jobs import deploy_job

GGUF = AssetKey("gguf_model")


def _value(md, key):
    v = md.get(key)
    return getattr(v, "value", getattr(v, "text", v))


@sensor(job=deploy_job, minimum_interval_seconds=30, description="Hot-reloads serving when a new GGUF passes its checks.")
def gguf_deploy_sensor(context: SensorEvaluationContext):
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=GGUF, after_storage_id=after), limit=50, ascending=True).records
    if not records:
        return SkipReason("no new gguf_model materialization")
    cursor = after
    for record in records:
        run = context.instance.get_run_by_id(record.run_id) if record.run_id else None
        if run is not None and not run.is_finished:
            break  # its blocking checks have not run yet: look again next tick
        cursor = record.storage_id
        md = record.asset_materialization.metadata
        if run is None or run.status != DagsterRunStatus.SUCCESS:
            context.log.info(f"skipping gguf_model from run {record.run_id}: the run (and so its checks) did not succeed")
            continue
        sha, path = _value(md, "sha256"), _value(md, "path")
        # run_key = sha256: the same model is deployed once, across ticks and daemon restarts
        yield RunRequest(run_key=sha, run_config={"ops": {"deployed_model": {"config": {"gguf_path": path, "sha256": sha}}}},
                         tags={"forge/gguf_sha256": sha})
    if cursor is not None:
        context.update_cursor(str(cursor))
