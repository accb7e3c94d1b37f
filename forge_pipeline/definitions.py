"""The project's Dagster definitions: every module under forge_pipeline/defs/, found by
`load_from_defs_folder` (the `dg` project layout; [tool.dg] in pyproject.toml). Nothing is listed by hand."""
from pathlib import Path

import dagster as dg

from forge_pipeline.config import load_config
from forge_pipeline.training.measurement import quiet_libraries


def _quiet_steps() -> None:
    """Steps run in the processes that import this module (`dg launch`, the run workers): their library chatter
    (Hugging Face "Loading weights" bars in export and evaluation, deprecation warnings) is off there as in the
    CLI, unless FORGE_VERBOSE. A bad FORGE_* setting is reported where a step reads the settings, not here."""
    try:
        verbose = load_config().verbose
    except ValueError:
        verbose = False
    quiet_libraries(verbose)


_quiet_steps()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
