"""Jobs. forge_job is GPU-bound: its runs carry the forge/gpu tag, which dagster.yaml's run queue limits
to one at a time, so a nightly run and a manual run never train at once."""

from dagster import AssetSelection, define_asset_job

GPU_TAG = {"forge/gpu": "true"}

data_job = define_asset_job(
    "data_job", selection=AssetSelection.groups("data"),
    description="Vault -> extracted -> curated, without touching a model.")

forge_job = define_asset_job(
    "forge_job", selection=AssetSelection.groups("data", "model"), tags=GPU_TAG,
    description="Vault -> curated set -> LoRA adapter -> GGUF. GPU-bound: one run at a time.")

deploy_job = define_asset_job(
    "deploy_job", selection=AssetSelection.groups("serving"),
    description="Hot-reload the serving process onto a new GGUF (requested by gguf_deploy_sensor).")
