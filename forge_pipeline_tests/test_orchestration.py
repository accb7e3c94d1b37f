"""Deploy sensor, deploy asset and the model assets on real Dagster instances against a real serving process."""
import importlib
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    MaterializeResult,
    RunRequest,
    asset,
    build_sensor_context,
    materialize,
)

from forge_pipeline.defs.deploy_sensor import model_deploy_sensor
from forge_pipeline.defs.deployed_model import deployed_model
from forge_pipeline.files import sha256_file
from forge_pipeline.orchestration.resources import ServingClient
from forge_pipeline_tests.helpers import free_port
from forge_pipeline_tests.tiny_models import make_tiny_gguf


def fake_gate_run(instance, sha: str, path: str, fail: bool = False, during=None, deploy: bool = True) -> None:
    """A real run that materializes model_evaluation as the evaluation step does (the candidate's file and the
    gate's decision), and fails afterwards when asked, as a failed blocking check would; ``during(instance)``
    is called inside the run, after the materialization, while the run is going."""
    @asset(name="model_evaluation")
    def model_evaluation():
        return MaterializeResult(metadata={"deploy": deploy, "sha256": sha, "path": path,
                                           "version": path.rsplit("/", 2)[-2]})

    @asset(deps=[model_evaluation])
    def after_checks(context):
        if during:
            during(context.instance)
        if fail:
            raise Failure("a blocking check failed")

    materialize([model_evaluation, after_checks], instance=instance, raise_on_error=False)


def tick(instance, url):
    """One sensor evaluation, as the daemon does it; returns (run requests, skip message)."""
    ctx = build_sensor_context(instance=instance, resources={"serving": ServingClient(url=url, max_attempts=1)})
    result = model_deploy_sensor.evaluate_tick(ctx)
    return [r for r in result.run_requests or [] if isinstance(r, RunRequest)], result.skip_message


def deploy(instance, request, url):
    """The deploy run the daemon would launch for ``request`` (same config and tags)."""
    return materialize([deployed_model], instance=instance, run_config=request.run_config, tags=request.tags,
                       resources={"serving": ServingClient(url=url, max_attempts=1)}, raise_on_error=False)


class Serving:
    """`python -m serving` on a fixed loopback port, so it can go down and come back at the same address."""

    def __init__(self, home, port):
        self.home, self.port, self.url, self.proc = home, port, f"http://127.0.0.1:{port}", None

    def start(self, model):
        env = {**__import__("os").environ, "FORGE_HOME": str(self.home), "FORGE_N_CTX": "512"}
        env.pop("FORGE_ADMIN_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--model", str(model)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("serving did not start")

    def live(self) -> str:
        return httpx.get(self.url + "/admin/model-status", timeout=30).json()["sha256"]

    def reload(self, path):
        r = httpx.post(self.url + "/admin/reload-model", json={"model_path": str(path)}, timeout=300)
        assert r.status_code == 200, r.text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory):
    work = tmp_path_factory.mktemp("deploy_ggufs")
    return {v: make_tiny_gguf(work / f"{v}.gguf", seed=i + 1, work=work) for i, v in enumerate(("v0", "v1", "v2"))}


@pytest.fixture
def models(tmp_path, monkeypatch, tiny_ggufs):
    """FORGE_HOME with three real tiny GGUFs (v0 old, v1, v2) and a serving address nothing listens on yet."""
    home = tmp_path / "home"
    monkeypatch.setenv("FORGE_HOME", str(home))
    paths = {}
    for v, src in tiny_ggufs.items():
        paths[v] = home / "models" / v / f"companion-{v}.gguf"
        paths[v].parent.mkdir(parents=True)
        shutil.copy2(src, paths[v])
    serving = Serving(home, free_port())
    yield {v: (str(p), sha256_file(p)) for v, p in paths.items()}, serving
    serving.stop()


@pytest.mark.slow
def test_deploy_is_level_triggered(models):
    """Issue 11 #15: a deploy that fails while serving is down is made once serving is back; a server that comes
    back on an old model is brought forward; when all is up, one reload per model and no more."""
    paths, serving = models
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, paths["v2"][1], paths["v2"][0])
        reqs, why = tick(instance, serving.url)
        assert reqs == [] and "not reachable" in why  # serving down: nothing requested, and it says why
        # what an edge-triggered sensor did: deploy at once, fail, and never again
        forced = RunRequest(run_config={"ops": {"deployed_model": {"config": {
            "model_path": paths["v2"][0], "sha256": paths["v2"][1]}}}},
            tags={"forge/deploy": "true", "forge/model_sha256": paths["v2"][1]})
        assert not deploy(instance, forced, serving.url).success

        serving.start(paths["v0"][0])  # back up, on an old model
        [req], _ = tick(instance, serving.url)
        assert deploy(instance, req, serving.url).success and serving.live() == paths["v2"][1]
        for _ in range(2):  # further ticks: nothing more
            reqs, why = tick(instance, serving.url)
            assert reqs == [] and "already runs" in why

        serving.reload(paths["v1"][0])  # e.g. restarted on another model
        [again], _ = tick(instance, serving.url)
        assert again.run_key != req.run_key  # a new attempt, not a key Dagster would drop
        assert deploy(instance, again, serving.url).success and serving.live() == paths["v2"][1]
        assert tick(instance, serving.url)[0] == []


@pytest.mark.slow
def test_a_rollback_by_hand_is_not_undone_until_a_newer_model_passes(models):
    """Found by hand: `forge rollback` under `forge up` was undone within 30 s (the sensor saw live != newest
    passed and deployed it again). Serving's record says which model the person rolled back from; the sensor
    leaves it (and says why, as `forge status` does), across a serving restart, until a newer model passes."""
    from forge_pipeline.cli.status import serving_line

    paths, serving = models
    serving.start(paths["v0"][0])
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, paths["v1"][1], paths["v1"][0])
        [req], _ = tick(instance, serving.url)
        assert deploy(instance, req, serving.url).success and serving.live() == paths["v1"][1]

        r = httpx.post(serving.url + "/admin/rollback", timeout=300)  # serving's real rollback
        assert r.status_code == 200, r.text
        assert serving.live() == paths["v0"][1]
        for _ in range(2):
            reqs, why = tick(instance, serving.url)
            assert reqs == [] and "rolled back" in why and "v1" in why, why
        status = httpx.get(serving.url + "/admin/model-status", timeout=30).json()
        assert status["rolled_back_from"]["sha256"] == paths["v1"][1]
        assert "rolled back from v1" in serving_line({"up": True, "url": serving.url, **status})

        serving.stop()  # the record survives a restart
        serving.start(paths["v0"][0])
        reqs, why = tick(instance, serving.url)
        assert reqs == [] and "rolled back" in why and serving.live() == paths["v0"][1]

        fake_gate_run(instance, paths["v2"][1], paths["v2"][0])  # a newer model passes: deployed
        [newer], _ = tick(instance, serving.url)
        assert deploy(instance, newer, serving.url).success and serving.live() == paths["v2"][1]
        assert "rolled_back_from" not in httpx.get(serving.url + "/admin/model-status", timeout=30).json()
        assert tick(instance, serving.url)[0] == []


@pytest.mark.slow
def test_deploy_requests_are_single_and_survive_a_killed_tick(models):
    """Never two deploys at once; the same state gives the same run key (a daemon killed inside a tick
    re-requests the key it had, which Dagster drops if the run exists); two materializations of one model in
    one tick give one request."""
    from dagster._core.test_utils import create_run_for_test

    paths, serving = models
    serving.start(paths["v0"][0])
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, paths["v1"][1], paths["v1"][0])
        fake_gate_run(instance, paths["v1"][1], paths["v1"][0])  # the same model made twice
        [first], _ = tick(instance, serving.url)
        [second], _ = tick(instance, serving.url)  # the daemon died before recording the tick
        assert first.run_key == second.run_key
        create_run_for_test(instance, job_name="deploy_job", status=DagsterRunStatus.STARTED, tags=first.tags)
        reqs, why = tick(instance, serving.url)
        assert reqs == [] and "already queued or running" in why
        assert serving.live() == paths["v0"][1]


def test_unfinished_failed_or_missing_models_are_never_deployed(models):
    """A GGUF whose run is still going (file possibly still being written, checks not run), whose run failed
    (a blocking check), whose file is gone, or that the evaluation gate refused is never a deploy target."""
    paths, serving = models
    seen = {}
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, paths["v1"][1], paths["v1"][0],
                      during=lambda inst: seen.update(during=tick(inst, serving.url)))
        assert seen["during"][0] == [] and "no model has passed" in seen["during"][1]
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, paths["v1"][1], paths["v1"][0], fail=True)
        fake_gate_run(instance, "f" * 64, "/nowhere/companion.gguf")
        fake_gate_run(instance, paths["v2"][1], paths["v2"][0], deploy=False)  # refused by the evaluation gate
        reqs, why = tick(instance, serving.url)
        assert reqs == [] and "no model has passed" in why


def test_deploy_asset_refuses_clearly_and_is_not_asked_again(models):
    """A file serving refuses (not a GGUF) fails the deploy with serving's reason, and the sensor does not keep
    requesting it."""
    paths, serving = models
    bad = serving.home / "models" / "v9" / "companion-v9.gguf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a gguf" * 100)
    serving.start(paths["v0"][0])
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, sha256_file(bad), str(bad))
        [req], _ = tick(instance, serving.url)
        result = deploy(instance, req, serving.url)
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        assert "refused" in failure.message or "refused" in str(failure.event_specific_data.error.message)
        reqs, why = tick(instance, serving.url)
        assert reqs == [] and "refused" in why
        assert serving.live() == paths["v0"][1]


@pytest.mark.parametrize("run_config, named", [
    ({"training": {"learning_rate": -1}}, ["learning_rate", "-1"]),
    ({"training": {"backend": "unslot"}}, ["backend", "unslot"]),
    ({"export": {"quantization": "q4_k"}}, ["quantization", "q4_k"]),
])
def test_bad_launch_config_is_refused_before_any_run(forge_home, run_config, named):
    """Issue 10 #1: a bad learning rate, backend or quantization fails the launch itself, naming the field and
    the value; no run is made (before: found inside the trainer, or after a whole training run)."""
    from dagster import DagsterError

    from forge_pipeline.definitions import defs

    job = defs().resolve_job_def("forge_job")
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(DagsterError) as refused:
            job.execute_in_process(run_config=run_config, instance=instance)
        message = str(refused.value) + str(getattr(refused.value, "errors", ""))
        assert all(n in message for n in named), message
        assert instance.get_runs() == []


def test_sensor_says_why_it_skips():
    """A tick that requests nothing says why (not Dagster's generic 'returned an empty result')."""
    with DagsterInstance.ephemeral() as instance:
        fake_gate_run(instance, "b" * 64, "/m/b.gguf", fail=True)
        reqs, why = tick(instance, "http://127.0.0.1:9")
        assert reqs == [] and why and "empty result" not in why


def test_nightly_schedule_follows_the_settings(monkeypatch):
    """Cron and time zone are settings; the zone defaults to the machine's local zone, not UTC."""
    import forge_pipeline.defs.nightly_schedule as module

    monkeypatch.delenv("FORGE_TIMEZONE", raising=False)
    monkeypatch.setenv("TZ", "America/New_York")
    monkeypatch.setenv("FORGE_NIGHTLY_CRON", "30 2 * * *")
    schedule = importlib.reload(module).nightly_forge
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * *", "America/New_York")
    monkeypatch.setenv("FORGE_TIMEZONE", "Europe/Paris")
    assert importlib.reload(module).nightly_forge.execution_timezone == "Europe/Paris"
    monkeypatch.undo()
    importlib.reload(module)


def test_model_assets_materialize_evaluate_then_skip_when_unchanged(config, tmp_path):
    """Train (tiny real Llama) -> export (adapter GGUF) -> evaluate, through the real assets and checks; the
    UI's headline numbers come first, typed and rounded; a second run reuses adapter and export."""
    from dagster import FloatMetadataValue

    from forge_pipeline.defs import data_assets, data_checks, model_checks, model_evaluation, model_export, training
    from forge_pipeline.export.pipeline import export_stages
    from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    base = make_tiny_llama(tmp_path / "tiny")
    assets = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples,
              training.lora_adapter, model_export.model_export, model_evaluation.model_evaluation,
              model_evaluation.candidate_passes_gate, *data_checks.DATA_CHECKS, *model_checks.MODEL_CHECKS]
    run_config = {"ops": {
        "lora_adapter": {"config": {"base_model": str(base), "max_steps": 3, "batch_size": 4, "max_seq_length": 384,
                                    "gradient_accumulation_steps": 1, "learning_rate": 0.005}},
        "model_export": {"config": {"quantization": "f16"}}}}
    resources = {"forge": ForgeSettingsResource(), "trainer": TrainerLauncher()}
    with DagsterInstance.ephemeral() as instance:
        first = materialize(assets, resources=resources, run_config=run_config, instance=instance, raise_on_error=False)
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks["gguf_loads_with_chat_template"] and checks["gguf_perplexity_parity"], checks
        # a random tiny model answers "p p p": a warning on the export; the evaluation still runs and decides
        assert checks["gguf_answers_not_degenerate"] is False
        adapter_md = first.asset_materializations_for_node("lora_adapter")[0].metadata
        assert list(adapter_md)[0] == "eval_loss" and isinstance(adapter_md["eval_loss"], FloatMetadataValue)
        assert adapter_md["eval_loss"].value == round(adapter_md["eval_loss"].value, 4)
        assert adapter_md["status"].value == "trained" and adapter_md["backend"].value == "transformers"
        assert "| setting | value |" in adapter_md["hyperparameters"].value  # a table, not a JSON blob
        assert "| batch layout | padded |" in adapter_md["training_run"].value
        assert "| training s |" in adapter_md["training_run"].value  # steady tokens/s needs more than 3 steps
        assert "data:image/png;base64," in adapter_md["loss_curve"].value
        export_md = first.asset_materializations_for_node("model_export")[0].metadata
        assert export_md["kind"].value == "adapter" and len(export_md["sha256"].value) == 64
        # the adapter's fidelity is the evaluation's KLD: the export loads and answers it in a child process
        # but does not load the Hugging Face model again for a perplexity ratio
        assert export_md["fidelity_checked_by"].value == "model_evaluation (fidelity KLD)"
        assert "perplexity_ratio" not in export_md and export_md["loads"].value is True
        # the trainer's progress reaches the run's event log through Pipes: step x/N with loss and ETA, the
        # last step's line although step 3 is off the CPU logging grid (every 2), and no raw metric dumps
        run_log = [e.message for e in instance.all_logs(first.run_id) if e.message]
        progress = [m for m in run_log if re.match(r"step \d+/3, loss \d+\.\d{3}, (ETA|done in) \d\d:\d\d$", m)]
        assert [m.split(",")[0] for m in progress] == ["step 1/3", "step 2/3", "step 3/3"], run_log
        assert "ETA" in progress[0] and "done in" in progress[-1]
        assert any(re.match(r"base model eval loss \d+\.\d{3} \(before training\)$", m) for m in run_log)
        assert not any(m.startswith("metrics {") for m in run_log)
        # found by hand: a one-line JSON dump of the whole config, and an unrounded closing loss line
        [config_line] = [m for m in run_log if m.startswith("training config: ")]
        assert "{" not in config_line and "\n" not in config_line, config_line
        assert all(part in config_line for part in ("base model tiny", "3 steps", "batch 4 x 1", "lr 0.005", "LoRA r16"))
        [written] = [m for m in run_log if m.startswith("adapter written to")]
        assert not re.search(r"\d\.\d{4,}", written), written
        stages = [e.message for e in instance.all_logs(first.run_id) if (e.message or "").startswith("export: ")]
        assert stages == [f"export: {s}" for s in export_stages(False)]
        eval_md = first.asset_materializations_for_node("model_evaluation")[0].metadata
        assert list(eval_md)[:2] == ["deploy", "decision"]
        assert isinstance(eval_md["eval_loss_candidate"], FloatMetadataValue)
        assert eval_md["sha256"].value == export_md["sha256"].value  # what the deploy sensor would deploy
        assert eval_md["decision"].value.startswith("deploy" if eval_md["deploy"].value else "refused")
        assert checks["candidate_passes_gate"] == eval_md["deploy"].value
        second = materialize(assets, resources=resources, run_config=run_config, instance=instance, raise_on_error=False)
        assert second.asset_materializations_for_node("lora_adapter")[0].metadata["status"].value == "cached"
        again = second.asset_materializations_for_node("model_export")[0].metadata
        assert again["status"].value == "cached" and again["sha256"].value == export_md["sha256"].value
        logs = [e.message for e in instance.all_logs(second.run_id) if e.message]
        assert any("training skipped" in m for m in logs)


def test_trainer_crash_fails_the_step(config, tmp_path):
    from forge_pipeline.defs import data_assets, training
    from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher

    assets = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples, training.lora_adapter]
    result = materialize(assets, resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher()},
                         run_config={"ops": {"lora_adapter": {"config": {"base_model": str(tmp_path / "missing.gguf")}}}},
                         raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "lora_adapter" in failure.step_key


@pytest.mark.slow
def test_nan_training_fails_once_and_is_not_retried(config, tmp_path):
    """A NaN loss (a corrupted base) fails lora_adapter with the trainer's reason, exactly once: the asset has
    no retry policy and the instance retries only crashed runs, never asset failures (a transient deploy
    error, by contrast, is retried by the next sensor tick: test_deploy_is_level_triggered)."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM

    from forge_pipeline.defs import data_assets, training
    from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher
    from forge_pipeline_tests.conftest import REPO_ROOT
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    broken = make_tiny_llama(tmp_path / "broken", seed=3)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(broken)
    assets = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples, training.lora_adapter]
    result = materialize(assets, resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher()},
                         run_config={"ops": {"lora_adapter": {"config": {
                             "base_model": str(broken), "max_steps": 2, "batch_size": 4, "max_seq_length": 256,
                             "gradient_accumulation_steps": 1, "eval_steps": 100}}}}, raise_on_error=False)
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events if e.step_key == "lora_adapter"]
    assert kinds.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in kinds
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    err = failure.event_specific_data.error
    logs = str(err.message) + str(err.cause.message if err.cause else "") + str(failure.event_specific_data.user_failure_data.description if failure.event_specific_data.user_failure_data else "")
    assert "nan" in logs.lower() or "non-finite" in logs.lower() or "diverged" in logs.lower(), logs[-3000:]
    assert training.lora_adapter.op.retry_policy is None
    assert yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert not (config.adapter_dir / "manifest.json").exists()
