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

        from dagster import PipesSubprocessClient

        cmd = [self.python or sys.executable, "-m", "forge_pipeline.training.pipes_entry"]
        client = PipesSubprocessClient(env={**os.environ, **self.env})
        return client.run(command=cmd, context=context, extras=extras)
