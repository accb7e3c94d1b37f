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
