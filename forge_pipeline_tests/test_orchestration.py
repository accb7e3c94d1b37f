"""Sensor, deploy and the model assets on real Dagster instances; deploy against a real serving process."""

import pytest
from dagster import DagsterInstance, Failure, MaterializeResult, RunRequest, asset, build_sensor_context, materialize

from forge_pipeline.defs.deploy_sensor import gguf_deploy_sensor
from forge_pipeline.defs.deployed_model import deployed_model
from forge_pipeline.orchestration.resources import ServingClient
from forge_pipeline_tests.test_serving import Server
from forge_pipeline_tests.tiny_models import make_tiny_gguf


def fake_gguf_run(instance, sha: str, path: str, fail: bool = False) -> None:
    """A real run that materializes gguf_model (and fails afterwards when asked, as a failed blocking check would)."""
    @asset(name="gguf_model")
    def gguf_model():
        return MaterializeResult(metadata={"sha256": sha, "path": path})

    @asset(deps=[gguf_model])
    def after_checks():
        if fail:
            raise Failure("a blocking check failed")

    materialize([gguf_model, after_checks], instance=instance, raise_on_error=False)


def requests(instance, cursor=None):
    ctx = build_sensor_context(instance=instance, cursor=cursor)
    result = gguf_deploy_sensor.evaluate_tick(ctx)
    return [r for r in result.run_requests or [] if isinstance(r, RunRequest)], result.cursor


def test_sensor_requests_one_deploy_per_passing_model():
    with DagsterInstance.ephemeral() as instance:
        assert requests(instance)[0] == []
        fake_gguf_run(instance, "a" * 64, "/m/a.gguf")
        fake_gguf_run(instance, "b" * 64, "/m/b.gguf", fail=True)
        fake_gguf_run(instance, "c" * 64, "/m/c.gguf")
        reqs, cursor = requests(instance)
        assert [r.run_key for r in reqs] == ["a" * 64, "c" * 64]
        assert reqs[0].run_config["ops"]["deployed_model"]["config"] == {"gguf_path": "/m/a.gguf", "sha256": "a" * 64}
        assert requests(instance, cursor)[0] == []  # further ticks: nothing again
        fake_gguf_run(instance, "a" * 64, "/m/a.gguf")  # same model re-materialized: same run_key, deduplicated by Dagster
        assert [r.run_key for r in requests(instance, cursor)[0]] == ["a" * 64]


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
    """A tick that requests nothing says why (a `return SkipReason` inside a generator was silently dropped)."""
    with DagsterInstance.ephemeral() as instance:
        fake_gguf_run(instance, "b" * 64, "/m/b.gguf", fail=True)
        result = gguf_deploy_sensor.evaluate_tick(build_sensor_context(instance=instance))
        assert not result.run_requests
        assert result.skip_message and "empty result" not in result.skip_message  # not Dagster's generic text


def test_nightly_schedule_follows_the_settings(monkeypatch):
    """Cron and time zone are settings; the zone defaults to the machine's local zone, not UTC."""
    import importlib

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


@pytest.fixture
def serving_home(tmp_path):
    home = tmp_path / "home"
    for seed in (1, 2):
        make_tiny_gguf(home / "models" / f"v{seed}" / f"companion-{seed}.gguf", seed=seed, work=tmp_path)
    return home


def test_deploy_asset_hot_reloads_serving(serving_home):
    from forge_pipeline.files import sha256_file

    s = Server(serving_home, model=serving_home / "models" / "v1" / "companion-1.gguf").wait()
    try:
        new = serving_home / "models" / "v2" / "companion-2.gguf"
        sha = sha256_file(new)
        result = materialize([deployed_model], resources={"serving": ServingClient(url=s.url)},
                             run_config={"ops": {"deployed_model": {"config": {"gguf_path": str(new), "sha256": sha}}}})
        assert result.success
        md = result.asset_materializations_for_node("deployed_model")[0].metadata
        assert md["sha256"].value == sha and md["version"].value == "v2"
        assert s.get("/admin/model-status").json()["sha256"] == sha
    finally:
        s.stop()


def test_deploy_fails_clearly_when_serving_is_down(tmp_path):
    client = ServingClient(url="http://127.0.0.1:9", max_attempts=2, backoff_s=0.05)
    with pytest.raises(RuntimeError, match="unreachable after 2 attempts.*forge serve"):
        client.reload(str(tmp_path / "x.gguf"), log=lambda m: None)


def test_model_assets_materialize_then_skip_when_unchanged(config, tmp_path):
    from forge_pipeline.defs import data_assets, data_checks, model_assets, model_checks
    from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    base = make_tiny_llama(tmp_path / "tiny")
    assets = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples,
              model_assets.lora_adapter, model_assets.gguf_model, *data_checks.DATA_CHECKS, *model_checks.MODEL_CHECKS]
    run_config = {"ops": {
        "lora_adapter": {"config": {"base_model": str(base), "max_steps": 3, "batch_size": 4, "max_seq_length": 384,
                                    "gradient_accumulation_steps": 1, "learning_rate": 0.005}},
        "gguf_model": {"config": {"quantization": "f16"}}}}
    resources = {"forge": ForgeSettingsResource(), "trainer": TrainerLauncher()}
    with DagsterInstance.ephemeral() as instance:
        first = materialize(assets, resources=resources, run_config=run_config, instance=instance, raise_on_error=False)
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks["gguf_loads_with_chat_template"] and checks["gguf_perplexity_parity"]
        adapter_md = first.asset_materializations_for_node("lora_adapter")[0].metadata
        assert adapter_md["status"].value == "trained" and adapter_md["backend"].value == "transformers"
        assert "data:image/png;base64," in adapter_md["loss_curve"].value
        gguf_md = first.asset_materializations_for_node("gguf_model")[0].metadata
        assert gguf_md["quantization"].value == "f16" and len(gguf_md["sha256"].value) == 64
        stages = [e.message for e in instance.all_logs(first.run_id) if (e.message or "").startswith("export: ")]
        assert stages == ["export: merge", "export: convert", "export: quantize", "export: validate"]
        second = materialize(assets, resources=resources, run_config=run_config, instance=instance, raise_on_error=False)
        assert second.asset_materializations_for_node("lora_adapter")[0].metadata["status"].value == "cached"
        again = second.asset_materializations_for_node("gguf_model")[0].metadata
        assert again["status"].value == "cached" and again["sha256"].value == gguf_md["sha256"].value
        logs = [e.message for e in instance.all_logs(second.run_id) if e.message]
        assert any("training skipped" in m for m in logs)


def test_trainer_crash_fails_the_step(config, tmp_path):
    from forge_pipeline.defs import data_assets, model_assets
    from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher

    assets = [data_assets.vault_notes, data_assets.extracted_examples, data_assets.curated_examples, model_assets.lora_adapter]
    result = materialize(assets, resources={"forge": ForgeSettingsResource(), "trainer": TrainerLauncher()},
                         run_config={"ops": {"lora_adapter": {"config": {"base_model": str(tmp_path / "missing.gguf")}}}},
                         raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "lora_adapter" in failure.step_key
