"""Jobs over the asset groups. GPU concurrency is not decided here: the GPU-bound steps declare the pool
(forge_pipeline.orchestration.concurrency), which limits them whichever job or selection runs them. Each job's
default run config sets the terminal log level (FORGE_DAGSTER_LOG_LEVEL, default INFO); forge_job's config is
{"training": {...}, "export": {...}}, checked before a run is made (orchestration/launch_config.py).

Jobs run their steps in one process (in_process_executor): the heavy work already has its own processes
(the trainer through Pipes, GGUF validation in a child), and a process per step costs each step a fresh
import of Dagster and the ML stack (data_job on the sample vault, 2 cores: 27 s per step process vs 14 s
in one; the per-step workers also print DEBUG lines whatever the log level)."""
import dagster as dg

from forge_pipeline.orchestration.launch_config import forge_job_config, logging_config

_LOGGING = logging_config()

data_job = dg.define_asset_job(
    "data_job", selection=dg.AssetSelection.groups("data"), config=_LOGGING, executor_def=dg.in_process_executor,
    description="Vault -> extracted -> curated, without touching a model.")

forge_job = dg.define_asset_job(
    "forge_job", selection=dg.AssetSelection.groups("data", "model"), config=forge_job_config,
    executor_def=dg.in_process_executor,
    description="Vault -> curated set -> LoRA adapter -> GGUF. Its training and export steps take the GPU pool.")

deploy_job = dg.define_asset_job(
    "deploy_job", selection=dg.AssetSelection.groups("serving"), config=_LOGGING, executor_def=dg.in_process_executor,
    description="Hot-reload the serving process onto the newest model that passed its gate (requested by "
                "the deploy sensor).")
