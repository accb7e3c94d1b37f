"""Instance storage classes named by dagster.yaml: they default to FORGE_HOME/dagster, so `dagster dev`
from the repository root keeps its run history under the data home without any variable being set."""
from __future__ import annotations

from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

from forge_pipeline.config import load_config


def _dagster_dir(sub: str) -> str:
    path = load_config().home_dir / "dagster" / sub
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


class ForgeHomeSqliteStorage(DagsterSqliteStorage):
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
