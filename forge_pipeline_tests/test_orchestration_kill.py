"""Issue 11 item 16: the trainer process SIGKILLed mid-run, through Dagster (not only at the trainer level,
test_training::test_kill_mid_run_then_resume): the step fails and says what happened, the GPU pool slot is
freed, and re-executing the run from its failure resumes from the last complete checkpoint.

Everything is real: the instance dagster.yaml describes (its GPU pool, one step at a time), forge_job run by a
separate run-worker process (`execute_job`, the in-process executor it declares), the trainer started by that
worker through Pipes, and a tiny real Llama trained on the sample vault's curated set."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from forge_pipeline.training.checkpoints import CHECKPOINT_RE, SEAL
from forge_pipeline_tests.conftest import REPO_ROOT

# The run worker: forge_job from the project's definitions, on the instance DAGSTER_HOME names.
WORKER = """
import json, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

job = ReconstructableRepository.for_module("forge_pipeline.definitions", "defs").get_reconstructable_job("forge_job")
with dg.DagsterInstance.get() as instance:
    if sys.argv[1] == "train":
        result = dg.execute_job(job, instance, run_config=json.loads(sys.argv[2]),
                                asset_selection=[dg.AssetKey("lora_adapter")])
    else:  # the UI's "Re-execute from failure"
        result = dg.execute_job(job, instance,
                                reexecution_options=dg.ReexecutionOptions.from_failure(sys.argv[2], instance))
    print("RESULT " + json.dumps({"run_id": result.run_id, "success": result.success}), flush=True)
"""

# 20 steps: the kill comes well under a second after the first checkpoint is sealed (step 2), long before step 20
TRAINING = {"max_steps": 20, "save_steps": 2, "eval_steps": 100, "batch_size": 4, "gradient_accumulation_steps": 1,
            "max_seq_length": 384, "learning_rate": 0.005}


def sealed_steps(training_dir: Path) -> list[int]:
    """Steps whose checkpoint carries its seal (read from the folder names and the seal file, not through the
    trainer's own resume logic)."""
    return sorted(int(m.group(1)) for p in training_dir.glob("checkpoint-*")
                  if (m := CHECKPOINT_RE.match(p.name)) and (p / SEAL).is_file())


def children_running(parent: int, needle: str) -> list[int]:
    """Pids of live processes whose parent is ``parent`` and whose command line contains ``needle``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and needle in cmdline:
            found.append(int(proc.name))
    return found


def result_of(out: str) -> dict:
    [line] = [s for s in out.splitlines() if s.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_trainer_sigkilled_fails_the_step_frees_the_gpu_and_the_retry_resumes(curated, tiny_base, tmp_path):
    settings = curated  # the sample vault extracted and curated under a fresh FORGE_HOME
    dagster_home = tmp_path / "dh"
    dagster_home.mkdir()
    shutil.copy2(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    script = tmp_path / "run_worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FORGE_HOME": str(settings.home_dir)}
    run_config = {"training": {"base_model": str(tiny_base), **TRAINING}}

    worker = subprocess.Popen([sys.executable, str(script), "train", json.dumps(run_config)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not sealed_steps(settings.training_dir) and worker.poll() is None:
            time.sleep(0.3)
        assert sealed_steps(settings.training_dir), f"no sealed checkpoint: {worker.poll()}"
        [trainer] = children_running(worker.pid, "forge_pipeline.training.pipes_entry")
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home), config_dir=str(REPO_ROOT))) as instance:
            held = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert [s.step_key for s in held] == ["lora_adapter"]  # the check below can see a held slot
        os.kill(trainer, signal.SIGKILL)  # the trainer only (e.g. the OOM killer); the run worker lives on
        out = worker.communicate(timeout=300)[0]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    killed_at = sealed_steps(settings.training_dir)[-1]
    assert killed_at < TRAINING["max_steps"] and not (settings.training_dir / "final").exists()
    first = result_of(out)
    assert first["success"] is False

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home), config_dir=str(REPO_ROOT))) as instance:
        run = instance.get_run_by_id(first["run_id"])
        assert run.status == DagsterRunStatus.FAILURE
        [failure] = [e for e in instance.all_logs(run.run_id) if e.dagster_event
                     and e.dagster_event.event_type_value == "STEP_FAILURE"]
        assert failure.step_key == "lora_adapter"
        error = failure.dagster_event.event_specific_data.error.message
        # a clear reason: what happened, and what a retry does (not only "failed with code -9")
        assert "SIGKILL" in error and "killed" in error and f"checkpoint-{killed_at}" in error, error
        # the GPU slot went back: no claim and no step waiting on the pool
        pool = instance.event_log_storage.get_concurrency_info("gpu")
        assert pool.claimed_slots == [] and pool.pending_steps == [], pool

    # re-execute from failure: a new GPU-bound run that must get the slot (a leaked claim would leave it waiting)
    try:
        retry = subprocess.run([sys.executable, str(script), "retry", first["run_id"]], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=500)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the retry never finished (GPU slot not freed?): {str(e.stdout)[-3000:]}") from None
    second = result_of(retry.stdout)
    assert second["success"], (retry.stdout + retry.stderr)[-4000:]

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home), config_dir=str(REPO_ROOT))) as instance:
        run = instance.get_run_by_id(second["run_id"])
        assert run.parent_run_id == first["run_id"] and run.status == DagsterRunStatus.SUCCESS
        messages = [e.message for e in instance.all_logs(run.run_id) if e.message]
        assert f"resuming from checkpoint-{killed_at}" in messages or any(
            m.startswith(f"resuming from checkpoint-{killed_at} ") for m in messages), messages
        [materialization] = [e.dagster_event.event_specific_data.materialization for e in instance.all_logs(run.run_id)
                             if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"]
        assert materialization.metadata["status"].value == "resumed"
        assert materialization.metadata["steps"].value == TRAINING["max_steps"]
        pool = instance.event_log_storage.get_concurrency_info("gpu")
        assert pool.claimed_slots == [] and pool.pending_steps == []
    # the adapter is published, read back from its own files
    manifest = json.loads((settings.adapter_dir / "manifest.json").read_text())
    assert manifest["status"] == "resumed" and manifest["metrics"]["global_step"] == TRAINING["max_steps"]
    assert (settings.adapter_dir / "adapter_model.safetensors").stat().st_size > 0
