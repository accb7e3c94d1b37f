"""The nightly run: FORGE_NIGHTLY_CRON (default 03:00) in FORGE_TIMEZONE (default: this machine's local
zone). Unchanged data, config and base model make training and export reuse their last results, so a quiet
night costs minutes, not GPU hours."""
import dagster as dg

from forge_pipeline.config import load_config
from forge_pipeline.defs.jobs import forge_job

_settings = load_config()

nightly_forge = dg.ScheduleDefinition(
    name="nightly_forge", job=forge_job, cron_schedule=_settings.nightly_cron,
    execution_timezone=_settings.schedule_timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"Re-extract the vault and, if anything changed, retrain and export ({_settings.nightly_cron}, "
                f"{_settings.schedule_timezone}; set FORGE_NIGHTLY_CRON / FORGE_TIMEZONE).")
