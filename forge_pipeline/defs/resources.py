"""The resources every asset, check and sensor is given: settings, the trainer launcher, the serving client."""
import dagster as dg

from forge_pipeline.orchestration.resources import ForgeSettingsResource, ServingClient, TrainerLauncher


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher(),
                                     "serving": ServingClient()})
