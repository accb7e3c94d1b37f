"""dagster.yaml and workspace.yaml are real: the instance they describe starts, stores runs under
FORGE_HOME, and lets one GPU-bound step run at a time; the cluster sample validates against Dagster's schema."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema

from forge_pipeline_tests.conftest import REPO_ROOT


def test_repo_instance_config_keeps_storage_under_forge_home(forge_home, tmp_path):
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "dh"), config_dir=str(REPO_ROOT))) as instance:
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        # exactly one GPU-concurrency mechanism: the pool, one step at a time; no run-tag limit beside it
        assert not instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
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
    assert data["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    pod = yaml.safe_load((REPO_ROOT / "docs" / "k8s" / "trainer_pod.yaml").read_text())
    assert pod["spec"]["containers"][0]["command"][-1] == "forge_pipeline.training.pipes_entry"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


GPU_PROBE = """
import json, sys, time
import dagster as dg
from forge_pipeline.orchestration.concurrency import GPU_POOL

@dg.op(pool=GPU_POOL)
def train():
    start = time.time()
    time.sleep(4)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps([start, time.time()]) + "\\n")

@dg.job
def gpu_bound():
    train()

with dg.DagsterInstance.get() as instance:
    assert gpu_bound.execute_in_process(instance=instance).success
"""


def test_two_gpu_bound_runs_never_overlap(forge_home, tmp_path):
    """Two runs whose step takes the GPU pool, started together on a fresh instance as dagster.yaml describes it
    (nothing prepared beforehand: no storage, no pool, as on a first `dagster dev`): the second step starts only
    after the first ended (timestamps written by the steps themselves). Without the cross-process lock around
    Dagster's SQLite pool claims, 9 rounds of 29 overlapped and 4 crashed creating the storage together."""
    from forge_pipeline.defs.model_evaluation import model_evaluation
    from forge_pipeline.defs.model_export import model_export
    from forge_pipeline.defs.training import lora_adapter
    from forge_pipeline.orchestration.concurrency import GPU_POOL

    assert {a.op.pool for a in (lora_adapter, model_export, model_evaluation)} == {GPU_POOL}
    script = tmp_path / "gpu_probe.py"
    script.write_text(GPU_PROBE)
    for attempt in range(3):  # the race is timing-dependent: each round is a fresh instance and a fresh race
        dagster_home, out = tmp_path / f"dh{attempt}", tmp_path / f"spans{attempt}.jsonl"
        dagster_home.mkdir()
        shutil.copy2(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FORGE_HOME": str(forge_home / str(attempt))}
        procs = [subprocess.Popen([sys.executable, str(script), str(out)], env=env, cwd=tmp_path,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errors = [p.communicate(timeout=180)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errors)
        (a_start, a_end), (b_start, b_end) = sorted(json.loads(line) for line in out.read_text().splitlines())
        assert b_start >= a_end, f"GPU steps overlapped: {a_start:.1f}-{a_end:.1f} and {b_start:.1f}-{b_end:.1f}"


def test_dg_project_layout_loads_every_definition():
    """`dg` sees the project ([tool.dg]) and the defs folder: the jobs, schedule, sensor and resources."""
    r = subprocess.run([str(Path(sys.executable).with_name("dg")), "list", "defs", "--json"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    listed = json.loads(r.stdout)
    names = json.dumps(listed)
    for name in ("vault_notes", "curated_examples", "lora_adapter", "deployed_model", "forge_job", "data_job",
                 "nightly_forge", "forge"):
        assert name in names, name
    assert "warning" not in r.stderr.lower(), r.stderr


@pytest.mark.slow
def test_headline_launch_prints_no_warning_and_no_debug_noise(forge_home):
    """`dg launch --job ...` (the README's headline form) on the sample vault: it succeeds with no
    supersession or venv warning and no DEBUG engine lines at the default log level."""
    r = subprocess.run([str(Path(sys.executable).with_name("dg")), "launch", "--job", "data_job"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "FORGE_HOME": str(forge_home)})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "RUN_SUCCESS" in out or "Finished execution of run" in out or (forge_home / "training_data" / "curated.jsonl").exists()
    assert "Warning" not in out and "superseded" not in out.lower(), out[:2000]
    assert " - DEBUG - " not in out
