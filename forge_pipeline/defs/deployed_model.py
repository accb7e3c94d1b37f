"""deployed_model: which GGUF the serving process runs, so the UI shows what is live."""
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from forge_pipeline.orchestration.resources import ServingClient


class DeployConfig(Config):
    gguf_path: str
    sha256: str


@asset(group_name="serving", deps=[AssetKey("gguf_model")],
       description="The GGUF the serving process hot-reloaded; one materialization per deployed model.")
def deployed_model(context: AssetExecutionContext, config: DeployConfig, serving: ServingClient) -> MaterializeResult:
    result = serving.reload(config.gguf_path, log=context.log.info)
    live = result["model"]
    if live["sha256"] != config.sha256:
        raise RuntimeError(f"serving reports sha256 {live['sha256']}, expected {config.sha256}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(live["path"]), "sha256": live["sha256"], "version": live["version"],
        "size_mb": live["size_mb"], "loaded_at": live["loaded_at"], "serving_url": serving.base_url,
        "previous": MetadataValue.json(result.get("previous") or {}),
    })
