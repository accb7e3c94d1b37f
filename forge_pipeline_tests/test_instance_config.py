"""dagster.yaml and workspace.yaml are real: the instance they describe starts, stores runs under
FORGE_HOME, and queues forge/gpu runs one at a time; the cluster sample validates against Dagster's schema."""
from pathlib import Path

import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema

from forge_pipeline_tests.conftest import REPO_ROOT


def test_repo_instance_config_keeps_storage_under_forge_home(forge_home, tmp_path):
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "dh"), config_dir=str(REPO_ROOT))) as instance:
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "forge/gpu", "limit": 1} in limits
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert Path(instance.storage_directory()).is_relative_to(forge_home / "dagster")
    assert (forge_home / "dagster" / "storage").is_dir()
    assert not any(p.name in ("history", "storage", "schedules") for p in REPO_ROOT.iterdir() if p.is_dir())


def test_workspace_yaml_names_the_code_location():
    ws = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert ws["load_from"][0]["python_module"]["module_name"] == "forge_pipeline.definitions"


def test_cluster_sample_config_validates(monkeypatch):
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(var, "set-by-the-deployment")
    data = yaml.safe_load((REPO_ROOT / "docs" / "k8s" / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), data)
    assert result.success, result.errors
    assert data["run_launcher"]["class"] == "K8sRunLauncher"
    assert {"key": "forge/gpu", "limit": 1} in data["run_coordinator"]["config"]["tag_concurrency_limits"]
    pod = yaml.safe_load((REPO_ROOT / "docs" / "k8s" / "trainer_pod.yaml").read_text())
    assert pod["spec"]["containers"][0]["command"][-1] == "forge_pipeline.training.pipes_entry"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
