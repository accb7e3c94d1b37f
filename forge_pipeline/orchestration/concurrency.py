"""The one GPU-concurrency mechanism: Dagster's pool "gpu". Every step that needs the accelerator declares
``pool=GPU_POOL``; dagster.yaml limits pools to one step at a time (``concurrency.pools.default_limit: 1``,
op granularity), so two GPU-bound steps never overlap, however their runs were started (the nightly
schedule, the launchpad, an asset materialized by hand, `dagster job execute` from a shell). A run-tag limit
would only hold runs that go through the daemon's queue and carry the tag. On SQLite the claims are made atomic
across processes by the instance's storage (orchestration/instance.py), so nothing needs to run first."""

GPU_POOL = "gpu"

