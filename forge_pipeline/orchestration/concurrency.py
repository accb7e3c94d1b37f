"""The one GPU-concurrency mechanism: Dagster's pool "gpu". Every step that needs the accelerator declares
``pool=GPU_POOL``; dagster.yaml limits pools to one step at a time (``concurrency.pools.default_limit: 1``,
op granularity), so two GPU-bound steps never overlap, however their runs were started (the nightly
schedule, the launchpad, an asset materialized by hand, `dagster job execute` from a shell). A run-tag limit
would only hold runs that go through the daemon's queue and carry the tag."""

GPU_POOL = "gpu"


def ensure_gpu_pool(instance) -> None:
    """Create the pool's limit row and slot once, before any run claims it: Dagster creates a pool lazily at
    its first claim, and two runs making that first claim together on a fresh instance both got a slot here
    (seen in test_two_gpu_bound_runs_never_overlap). `forge up` calls this when it starts the daemon."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits and storage.get_concurrency_info(GPU_POOL).slot_count == 0:
        storage.initialize_concurrency_limit_to_default(GPU_POOL)
