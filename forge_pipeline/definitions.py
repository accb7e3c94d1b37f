"""The project's Dagster definitions: every module under forge_pipeline/defs/, found by
`load_from_defs_folder` (the `dg` project layout; [tool.dg] in pyproject.toml). Nothing is listed by hand."""
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
