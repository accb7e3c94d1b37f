"""The Dagster layer: assets, checks, resources, jobs, schedules and sensors over the plain-Python core."""
