"""The nightly run (default 03:00; FORGE_NIGHTLY_CRON and FORGE_TIMEZONE change it). Unchanged data, config
and base model make training and export reuse their last results, so a quiet night costs minutes, not GPU hours."""
import os

from dagster import DefaultScheduleStatus, ScheduleDefinition

from forge_pipeline.orchestration.jobs import forge_job

nightly_forge = ScheduleDefinition(
    name="nightly_forge", job=forge_job, cron_schedule=os.environ.get("FORGE_NIGHTLY_CRON", "0 3 * * *"),
    execution_timezone=os.environ.get("FORGE_TIMEZONE", "UTC"), default_status=DefaultScheduleStatus.STOPPED,
    description="Re-extract the vault and, if anything changed, retrain and export overnight.")
