"""The resources every asset, check and sensor is given: settings, the trainer launcher, the serving client."""
import os

import dagster as dg

from forge_pipeline.orchestration.resources import ForgeSettingsResource, ServingClient, TrainerLauncher


@dg.definitions
def resources() -> dg.Definitions:
    # The admin token is an EnvVar: resolved in the process that calls serving, shown in the UI by name only.
    # Without one set (serving on loopback needs none), no token is sent.
    token = dg.EnvVar("FORGE_ADMIN_TOKEN") if os.environ.get("FORGE_ADMIN_TOKEN") else None
    return dg.Definitions(resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher(),
                                     "serving": ServingClient(admin_token=token)})
