"""Dagster-side helpers shared by the definitions in forge_pipeline/defs: resource classes, the instance
storage that keeps run history under FORGE_HOME, the GPU pool, metadata formatting. No definitions here."""
