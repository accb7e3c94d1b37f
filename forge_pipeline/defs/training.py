"""lora_adapter: the curated set -> a LoRA adapter, trained in its own process through Dagster Pipes."""
import dagster as dg

from forge_pipeline.defs.data_assets import curated_examples
from forge_pipeline.orchestration.concurrency import GPU_POOL
from forge_pipeline.orchestration.launch_config import TrainingRunConfig
from forge_pipeline.orchestration.metadata import adapter_metadata
from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher
from forge_pipeline.training.config import TrainingConfigError, overrides_from_launchpad, validate_overrides


@dg.asset(group_name="model", deps=[curated_examples], pool=GPU_POOL, kinds={"pytorch", "lora"},
          description="LoRA adapter trained on the curated set, in its own process (Dagster Pipes); reused "
                      "when data, config and base model are unchanged.")
def lora_adapter(context: dg.AssetExecutionContext, config: TrainingRunConfig, forge: ForgeSettingsResource,
                 trainer: TrainerLauncher) -> dg.MaterializeResult:
    settings = forge.settings()
    # Only what was set (FORGE_TRAIN_* under the launchpad's values) goes to the trainer, which resolves it for
    # its own device; bad values fail here, before the trainer process starts.
    overrides = {**settings.training_overrides(), **overrides_from_launchpad(config.model_dump())}
    problems = validate_overrides(overrides)
    if problems:
        raise TrainingConfigError(problems)
    context.log.info(f"training overrides: {overrides or 'none (the device defaults)'}")
    result = trainer.run(context, extras={
        "overrides": overrides, "data_path": str(settings.curated_path), "eval_path": str(settings.eval_path),
        "output_dir": str(settings.training_dir), "home": str(settings.home_dir),
    }).get_materialize_result()
    reported = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}  # Pipes sends MetadataValues
    if reported.get("status") == "cached":
        context.log.info("data, config and base model unchanged since the last adapter: training skipped")
    return dg.MaterializeResult(metadata=adapter_metadata(reported), data_version=result.data_version)
