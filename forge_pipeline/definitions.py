"""Wires the project together; everything it names lives in forge_pipeline.orchestration."""
from dagster import Definitions

from forge_pipeline.orchestration import data_assets, data_checks, deploy_assets, jobs, model_assets, model_checks
from forge_pipeline.orchestration.resources import ForgeSettingsResource, ServingClient, TrainerLauncher
from forge_pipeline.orchestration.schedules import nightly_forge
from forge_pipeline.orchestration.sensors import gguf_deploy_sensor

defs = Definitions(
    assets=[data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples,
            model_assets.lora_adapter, model_assets.gguf_model, deploy_assets.deployed_model],
    asset_checks=[*data_checks.DATA_CHECKS, *model_checks.MODEL_CHECKS],
    jobs=[jobs.forge_job, jobs.data_job, jobs.deploy_job],
    schedules=[nightly_forge],
    sensors=[gguf_deploy_sensor],
    resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher(), "serving": ServingClient()},
)
