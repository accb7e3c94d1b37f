"""Small ConfigurableResources. Each wraps settings or a client; the core never sees Dagster."""

from typing import Optional

from dagster import ConfigurableResource

from forge_pipeline.config import ForgeSettings, load_config


class ForgeSettingsResource(ConfigurableResource):
    """Pipeline settings: the environment (FORGE_*), with optional per-deployment overrides."""

    home: Optional[str] = None
    vault: Optional[str] = None

    def settings(self) -> ForgeSettings:
        return load_config(home=self.home, vault=self.vault)


class TrainerLauncher(ConfigurableResource):
    """How the trainer process is started: a local subprocess here. Swap for another Pipes client (e.g.
    dagster-k8s's PipesK8sClient) to train on a GPU node; the entry point stays the same module."""

    python: Optional[str] = None  # default: this interpreter
    env: dict = {}

    def run(self, context, extras: dict):
        import os
        import sys

        from dagster import DagsterEventType, EventRecordsFilter, Failure, PipesSubprocessClient
        from dagster._core.errors import DagsterPipesExecutionError  # not exported at the top level

        cmd = [self.python or sys.executable, "-m", "forge_pipeline.training.pipes_entry"]
        client = PipesSubprocessClient(env={**os.environ, **self.env})
        try:
            return client.run(command=cmd, context=context, extras=extras)
        except DagsterPipesExecutionError as e:
            # The trainer's own error (a NaN loss, too few examples, a missing base model) arrived as a Pipes
            # "closed with exception" event; say it in the step failure instead of "failed with code 1". Not
            # retried: the same data and config fail the same way.
            records = context.instance.get_event_records(EventRecordsFilter(DagsterEventType.ENGINE_EVENT), limit=50,
                                                         ascending=False)
            reasons = [r.event_log_entry.dagster_event.engine_event_data.error.message.strip()
                       for r in records if r.run_id == context.run.run_id and r.event_log_entry.dagster_event
                       and r.event_log_entry.dagster_event.engine_event_data
                       and r.event_log_entry.dagster_event.engine_event_data.error]
            if not reasons:
                reasons = [_killed_reason(str(e), extras.get("output_dir"))]
            raise Failure(f"training failed: {reasons[0]}", allow_retries=False) from None


def _killed_reason(error: str, output_dir: Optional[str]) -> str:
    """Why the trainer stopped without reporting an error: killed by a signal (the OOM killer, `kill -9`) names
    the signal and the checkpoint a re-execution resumes from, instead of Dagster's "failed with code -9"
    (issue 11 item 16, test_orchestration_kill). Dagster 1.13's PipesSubprocessClient gives the exit code only in
    its message; anything else is passed on as it is."""
    import re
    import signal
    from pathlib import Path

    from forge_pipeline.training.checkpoints import checkpoint_problem, checkpoints

    code = re.search(r"failed with code (-\d+)", error)
    if not code:
        return error
    try:
        name = signal.Signals(-int(code.group(1))).name
    except ValueError:
        name = f"signal {-int(code.group(1))}"
    # read-only (the trainer's own resume removes incomplete checkpoints; this only names the newest complete one)
    done = next((c for c in reversed(checkpoints(Path(output_dir))) if checkpoint_problem(c) is None), None) \
        if output_dir else None
    after = (f"re-executing the run (same data and config) resumes from {done.name}, the last complete checkpoint"
             if done else "no complete checkpoint was saved yet, so a re-execution starts over")
    return f"the trainer process was killed by {name} (e.g. the out-of-memory killer or `kill -9`); {after}"


class ServingClient(ConfigurableResource):
    """Serving's admin API, as the deploy asset and sensor use it: a thin layer over
    serving.client.ServingAdminClient (the one client; it retries connection errors, 409 and 5xx with backoff).
    ``url`` defaults to FORGE_SERVING_URL; ``admin_token`` is given as EnvVar("FORGE_ADMIN_TOKEN") in
    forge_pipeline/defs/resources.py, so the secret is read where the run happens and never stored in run
    config or the UI."""

    url: Optional[str] = None
    admin_token: Optional[str] = None
    max_attempts: Optional[int] = None  # default: the client's own

    def client(self):
        from serving.client import ServingAdminClient

        options = {"base_url": self.url, "token": self.admin_token, "max_attempts": self.max_attempts}
        return ServingAdminClient.from_env(**{k: v for k, v in options.items() if v is not None})

    def status(self, attempts: Optional[int] = None) -> dict:
        return self.client().status(attempts=attempts)

    def reload(self, model_path: str, base_path: Optional[str] = None) -> dict:
        return self.client().reload(model_path, backup=True, base_path=base_path)

    def rollback(self) -> dict:
        return self.client().rollback()
