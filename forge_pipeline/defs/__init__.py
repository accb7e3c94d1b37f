"""The Dagster definitions, one concern per module. `forge_pipeline.definitions` loads this folder with
`dagster.load_from_defs_folder` (the `dg` project layout, [tool.dg] in pyproject.toml): a module added here
is picked up without being listed anywhere. The work itself lives in the plain-Python stage packages
(extraction, curation, training, export, evaluation); helpers these modules share live in
forge_pipeline.orchestration."""
