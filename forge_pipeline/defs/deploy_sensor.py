"""Deploy each new GGUF whose checks passed: one deploy run per model, keyed by its sha256."""
import dagster as dg

from forge_pipeline.defs.jobs import deploy_job

GGUF = dg.AssetKey("gguf_model")


def _value(md, key):
    v = md.get(key)
    return getattr(v, "value", getattr(v, "text", v))


@dg.sensor(job=deploy_job, minimum_interval_seconds=30,
           description="Hot-reloads serving when a new GGUF passes its checks.")
def gguf_deploy_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=GGUF, after_storage_id=after), limit=50, ascending=True).records
    if not records:
        return dg.SensorResult(skip_reason="no new gguf_model materialization")
    cursor, requests = after, []
    for record in records:
        run = context.instance.get_run_by_id(record.run_id) if record.run_id else None
        if run is not None and not run.is_finished:
            break  # its blocking checks have not run yet: look again next tick
        cursor = record.storage_id
        md = record.asset_materialization.metadata
        if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
            context.log.info(f"skipping gguf_model from run {record.run_id}: the run (and so its checks) did not succeed")
            continue
        sha, path = _value(md, "sha256"), _value(md, "path")
        requests.append(dg.RunRequest(run_key=sha, run_config={"ops": {"deployed_model": {"config": {
            "gguf_path": path, "sha256": sha}}}}, tags={"forge/gguf_sha256": sha}))
    return dg.SensorResult(run_requests=requests, cursor=str(cursor) if cursor is not None else None,
                           skip_reason=None if requests else "no new model whose checks passed")
