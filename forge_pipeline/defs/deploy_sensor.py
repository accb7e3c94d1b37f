"""Keeps serving on the newest model whose gate passed (level-triggered; see orchestration/deploy_target.py)."""
import dagster as dg

from forge_pipeline.defs.jobs import deploy_job
from forge_pipeline.orchestration.deploy_records import (
    DEPLOY_TAG,
    FINISHED,
    IN_FLIGHT,
    SHA_TAG,
    deploy_runs,
    newest_passed,
)
from forge_pipeline.orchestration.deploy_target import decide
from forge_pipeline.orchestration.resources import ServingClient


@dg.sensor(job=deploy_job, minimum_interval_seconds=30,
           description="Whenever serving's live model differs from the newest model whose gate passed, requests "
                       "one deploy (never two at once); retried on later ticks if serving was down. A model a "
                       "person rolled back from is not put back.")
def model_deploy_sensor(context: dg.SensorEvaluationContext, serving: ServingClient) -> dg.SensorResult:
    target = newest_passed(context.instance, log=context.log.info)
    live, error, rolled_back_from = None, None, None
    if target is not None:
        try:
            status = serving.status(attempts=1)  # down now: the next tick asks again
            live, rolled_back_from = status.get("sha256"), (status.get("rolled_back_from") or {}).get("sha256")
        except Exception as e:  # any failure to ask is "not reachable now": look again next tick
            error = f"{type(e).__name__}: {e}"
    sha = target.sha256 if target else None
    decision = decide(target, live, error, in_flight=deploy_runs(context.instance, IN_FLIGHT),
                      finished_attempts=deploy_runs(context.instance, FINISHED, sha) if sha else 0,
                      refused=bool(sha) and deploy_runs(context.instance, FINISHED, sha, refused=True) > 0,
                      rolled_back_from=rolled_back_from)
    if not decision.request:
        return dg.SensorResult(skip_reason=decision.reason)
    context.log.info(decision.reason)
    config = {"model_path": target.path, "sha256": target.sha256, "base_path": target.base_path}
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=decision.run_key, run_config={"ops": {"deployed_model": {"config": config}}},
        tags={**DEPLOY_TAG, SHA_TAG: target.sha256})])
