"""Instance storage classes named by dagster.yaml: they default to FORGE_HOME/dagster, so `dagster dev`
from the repository root keeps its run history under the data home without any variable being set.

The storage also makes the GPU pool's limit hold on SQLite (dagster.yaml: ``concurrency.pools.default_limit:
1``, which Dagster 1.13.27 applies to a pool lazily, at its first claim). Dagster's SQL claim is several
separate statements (has_unassigned_slots, add_pending_step, then an UPDATE of a slot row chosen with
``with_for_update(skip_locked=True)``, a no-op on SQLite), so two processes claiming together can both be
given the one slot: two runs started together on a fresh instance overlapped their GPU steps in 9 of 29
rounds here (test_two_gpu_bound_runs_never_overlap; 0 of 15 with the lock). Claims, pool set-up and releases therefore run under one
file lock beside the database, which serializes them across every process of the instance (webserver,
daemon, run workers, `dg launch`); the database is also created under a lock, because two processes creating
it together crashed one of them (alembic: "more than one head", 4 of 29 rounds). No start-up call is needed.
"""
from __future__ import annotations

import os

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

from forge_pipeline.config import load_config


def _dagster_dir(sub: str) -> str:
    path = load_config().home_dir / "dagster" / sub
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _lock(directory: str, name: str):
    from filelock import FileLock

    return FileLock(os.path.join(directory, name))


class SerializedPoolsEventLogStorage(SqliteEventLogStorage):
    """SQLite event log storage whose pool claims and releases are atomic across processes (see the top)."""

    def _pools_lock(self):
        if getattr(self, "_forge_pools_lock", None) is None:
            self._forge_pools_lock = _lock(self._base_dir, "pools.lock")
        return self._forge_pools_lock

    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        with self._pools_lock():
            return super().initialize_concurrency_limit_to_default(concurrency_key)

    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        with self._pools_lock():
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def free_concurrency_slot_for_step(self, run_id: str, step_key: str) -> None:
        with self._pools_lock():
            return super().free_concurrency_slot_for_step(run_id, step_key)

    def free_concurrency_slots_for_run(self, run_id: str) -> None:
        with self._pools_lock():
            return super().free_concurrency_slots_for_run(run_id)

    def set_concurrency_slots(self, concurrency_key: str, num: int) -> None:
        with self._pools_lock():
            return super().set_concurrency_slots(concurrency_key, num)


class ForgeHomeSqliteStorage(DagsterSqliteStorage):
    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        with _lock(base_dir, "create.lock"):  # the first processes of a fresh instance create it one at a time
            super().__init__(base_dir, inst_data=inst_data)
            self._event_log_storage = SerializedPoolsEventLogStorage(self._event_log_storage._base_dir)

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value):
        return cls.from_local(base_dir=_dagster_dir("storage"), inst_data=inst_data)


class ForgeHomeArtifactStorage(LocalArtifactStorage):
    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value):
        return cls(base_dir=_dagster_dir("artifacts"), inst_data=inst_data)


class ForgeHomeComputeLogManager(LocalComputeLogManager):
    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value):
        return cls(base_dir=_dagster_dir("compute_logs"), inst_data=inst_data)
