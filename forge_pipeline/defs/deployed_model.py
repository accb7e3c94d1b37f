"""deployed_model: the model serving runs, so the UI shows what is live. The deploy sensor passes the target;
materialized by hand, it deploys the newest model whose gate passed. No Dagster retry policy: the client
retries brief errors with backoff, and a deploy that still fails is requested again by the sensor's next tick
(a new run) for as long as serving is not on the target; a refused model (bad file, wrong base) is a Failure
that says so."""
from typing import Optional

import dagster as dg

from forge_pipeline.orchestration.deploy_records import GATE_ASSET, REFUSED_TAG, newest_passed
from forge_pipeline.orchestration.resources import ServingClient


class DeployConfig(dg.Config):
    model_path: Optional[str] = None  # default: the newest model whose gate passed
    sha256: Optional[str] = None
    base_path: Optional[str] = None


@dg.asset(group_name="serving", deps=[GATE_ASSET], kinds={"fastapi"},
          description="The model the serving process hot-reloaded; one materialization per deploy.")
def deployed_model(context: dg.AssetExecutionContext, config: DeployConfig, serving: ServingClient) -> dg.MaterializeResult:
    path, sha, base = config.model_path, config.sha256, config.base_path
    if path is None:
        target = newest_passed(context.instance, log=context.log.info)
        if target is None:
            raise dg.Failure("no model has passed its gate yet: run forge_job first", allow_retries=False)
        path, sha, base = target.path, target.sha256, target.base_path
    context.log.info(f"deploying {path} to serving at {serving.client().base_url}")
    try:
        result = serving.reload(path, base_path=base)
    except Exception as e:
        if _refused(e):
            context.instance.add_run_tags(context.run.run_id, REFUSED_TAG)  # the sensor will not ask again
            raise dg.Failure(f"serving refused {path}: {e}", allow_retries=False) from None
        raise
    live = result.get("model", result)
    if sha and live.get("sha256") != sha:
        raise dg.Failure(f"serving reports sha256 {live.get('sha256')}, expected {sha}", allow_retries=False)
    return dg.MaterializeResult(metadata={
        "version": live.get("version"), "kind": live.get("kind", "full"), "sha256": live.get("sha256"),
        "size_mb": live.get("size_mb"), "path": dg.MetadataValue.path(live.get("path", path)),
        "loaded_at": live.get("loaded_at"), "serving_url": serving.client().base_url,
        "previous": dg.MetadataValue.json(result.get("previous") or {}),
    })


def _refused(e: Exception) -> bool:
    """Serving looked at the model and said no (ServingRefused: 400/404/422...): asking again will not help."""
    from serving.client import ServingRefused

    return isinstance(e, ServingRefused)
