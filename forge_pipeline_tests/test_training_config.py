"""Training settings: one schema, validated, reachable from the CLI, the environment and the launchpad, and
resolved for the device that trains (issue 10 part 1)."""
import typing
import warnings

import pytest

from forge_pipeline.cli import build_parser
from forge_pipeline.cli import main as forge_main
from forge_pipeline.config import ForgeSettingsWarning, load_config
from forge_pipeline.training import pipes_entry
from forge_pipeline.training.config import (
    CPU_DEFAULTS,
    TrainingConfig,
    TrainingConfigError,
    overrides_from_launchpad,
    resolve_training_config,
    training_override_fields,
    validate_overrides,
)


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]


# -- the CLI and the launchpad: bad values fail before anything runs, naming field, value and range --

def test_forge_train_rejects_a_negative_learning_rate_before_reading_data(forge_home, capsys):
    rc = forge_main(["--home", str(forge_home), "train", "--lr", "-1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "learning_rate=" in err and "-1" in err and "> 0" in err, err
    assert "training data not found" not in err  # failed on the value, before looking for data
    assert not (forge_home / "training").exists()


@pytest.mark.parametrize("overrides, names", [
    ({"learning_rate": -1}, ["learning_rate=-1", "> 0"]),
    ({"backend": "unslot"}, ["backend='unslot'", "'auto', 'unsloth', 'transformers'"]),
    ({"lora_dropout": 1.5}, ["lora_dropout=1.5", ">= 0.0 and < 1.0"]),
    ({"max_steps": 0}, ["max_steps=0", "-1 (run all epochs) or an integer >= 1"]),
    ({"lr_scheduler_type": "cosin"}, ["lr_scheduler_type='cosin'", "'cosine'"]),
    ({"target_modules": []}, ["target_modules=[]", "non-empty list"]),
    ({"packing": "maybe"}, ["packing='maybe'", "true or false"]),
])
def test_bad_values_name_the_field_the_value_and_the_allowed_range(overrides, names):
    for device in ("cpu", "cuda"):
        with pytest.raises(TrainingConfigError) as e:
            resolve_training_config(overrides, device)
        for part in names:
            assert part in str(e.value), str(e.value)
    problems = validate_overrides(overrides)
    assert len(problems) == 1 and names[0] in problems[0]


def test_unknown_setting_suggests_the_nearest_name():
    with pytest.raises(TrainingConfigError, match="unknown setting 'lerning_rate' \\(did you mean 'learning_rate'"):
        resolve_training_config({"lerning_rate": 1e-4}, "cpu")
    with pytest.raises(TrainingConfigError, match="device='tpu'"):
        resolve_training_config({}, "tpu")


def test_valid_overrides_and_device_defaults():
    assert validate_overrides({"learning_rate": "1e-4", "packing": "true", "max_steps": 10, "seed": None}) == []
    gpu, cpu = resolve_training_config({}, "cuda"), resolve_training_config({}, "cpu")
    assert (gpu.max_steps, gpu.max_seq_length, gpu.num_epochs) == (-1, 1024, 3)
    assert all(getattr(cpu, k) == v for k, v in CPU_DEFAULTS.items())
    assert resolve_training_config({"max_steps": 7}, "cpu").max_steps == 7  # an override beats the device default


def test_model_copy_is_not_the_way_in():
    """resolve validates; TrainingConfig itself refuses unknown names (model_copy(update=...) checked nothing)."""
    with pytest.raises(ValueError):
        TrainingConfig(lerning_rate=1.0)


# -- resolved where training runs --

def test_pipes_entry_resolves_overrides_for_its_own_device(monkeypatch):
    """The launching process sends only what the user set; a GPU trainer gets the GPU defaults even when the
    Dagster run worker that launched it has no GPU."""
    import forge_pipeline.training.base_model as base_model

    extras = {"overrides": {"learning_rate": 1e-4}, "data_path": "x", "output_dir": "y", "home": "z"}
    monkeypatch.setattr(base_model, "cuda_available", lambda: True)
    on_gpu = pipes_entry.config_from_extras(extras)
    assert on_gpu.learning_rate == 1e-4 and on_gpu.max_steps == -1 and on_gpu.max_seq_length == 1024
    monkeypatch.setattr(base_model, "cuda_available", lambda: False)
    on_cpu = pipes_entry.config_from_extras(extras)
    assert on_cpu.learning_rate == 1e-4 and on_cpu.max_steps == CPU_DEFAULTS["max_steps"]
    with pytest.raises(TrainingConfigError, match="backend='unslot'"):
        pipes_entry.config_from_extras({**extras, "overrides": {"backend": "unslot"}})


# -- every field reachable from every entry point --

def _sample_env_value(name: str) -> str:
    return '["q_proj"]' if typing.get_origin(TrainingConfig.model_fields[name].annotation) is list else "7"


def test_every_training_field_is_reachable_from_cli_env_and_launchpad(monkeypatch):
    fields = set(TrainingConfig.model_fields)
    # CLI: one option per field, whose help states the allowed values and the default
    options = {a.dest: a for a in _train_parser()._actions}
    assert fields <= set(options), f"fields without a `forge train` option: {fields - set(options)}"
    for name in fields:
        assert "Allowed:" in options[name].help and "Default:" in options[name].help, name
    # environment: FORGE_TRAIN_<NAME>
    for name in fields:
        monkeypatch.setenv(f"FORGE_TRAIN_{name.upper()}", _sample_env_value(name))
    assert set(load_config().training_overrides()) == fields
    # launchpad: a dagster Config class built from the generated fields has every field, all optional
    import dagster
    import pydantic

    run_config = pydantic.create_model("TrainingRunConfig", __base__=dagster.Config, **training_override_fields())
    schema_fields = run_config.to_config_schema().as_field().config_type.fields
    assert set(schema_fields) == fields
    assert not any(f.is_required for f in schema_fields.values())
    assert run_config().model_dump() == {name: None for name in fields}  # all unset: device defaults apply
    # a choice outside the schema's is refused by Dagster's own config check, before any run exists
    chosen = run_config(backend="transformers", packing=True, learning_rate=1e-4)
    assert overrides_from_launchpad(chosen.model_dump()) == {"backend": "transformers", "packing": True,
                                                             "learning_rate": 1e-4}
    from dagster._config import validate_config

    schema = run_config.to_config_schema().as_field().config_type
    assert not validate_config(schema, {"backend": "unslot"}).success
    assert validate_config(schema, {"backend": "unsloth", "learning_rate": 0.001}).success


def test_cli_help_states_device_dependent_defaults():
    options = {a.dest: a for a in _train_parser()._actions}
    assert "Default: 3 on CUDA, 1 on CPU." in options["num_epochs"].help
    assert "Default: 2e-4." in options["learning_rate"].help or "Default: 0.0002." in options["learning_rate"].help
    assert options["backend"].choices == ["auto", "unsloth", "transformers"]
    assert "--lr" in options["learning_rate"].option_strings and "--epochs" in options["num_epochs"].option_strings


def test_cli_flags_parse_to_overrides():
    from forge_pipeline.cli.train import training_overrides_from_args

    args = _train_parser().parse_args(["--lr", "1e-4", "--packing", "--target-modules", "q_proj", "v_proj",
                                       "--base-model", "/models/x.gguf", "--max-steps", "5"])
    overrides = training_overrides_from_args(args)
    assert overrides == {"learning_rate": "1e-4", "packing": True, "target_modules": ["q_proj", "v_proj"],
                         "base_model": "/models/x.gguf", "max_steps": "5"}
    cfg = resolve_training_config(overrides, "cpu")
    assert (cfg.learning_rate, cfg.max_steps, cfg.packing) == (1e-4, 5, True)


# -- the environment --

def test_environment_sets_training_settings_including_the_base_model(forge_home, monkeypatch):
    monkeypatch.setenv("FORGE_TRAIN_BASE_MODEL", "/models/other.gguf")
    monkeypatch.setenv("FORGE_TRAIN_LEARNING_RATE", "1e-4")
    monkeypatch.setenv("FORGE_TRAIN_TARGET_MODULES", '["q_proj", "v_proj"]')
    cfg = resolve_training_config(load_config().training_overrides(), "cuda")
    assert cfg.base_model == "/models/other.gguf" and cfg.learning_rate == 1e-4
    assert cfg.target_modules == ["q_proj", "v_proj"]


def test_cli_flag_beats_the_environment_and_a_bad_env_value_is_named(forge_home, monkeypatch, capsys):
    monkeypatch.setenv("FORGE_TRAIN_LEARNING_RATE", "-5")
    assert forge_main(["--home", str(forge_home), "train"]) == 2
    assert "learning_rate='-5'" in capsys.readouterr().err
    assert forge_main(["--home", str(forge_home), "train", "--lr", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" not in err and "training data not found" in err, err


def test_training_list_from_the_environment_must_be_json(forge_home, monkeypatch):
    monkeypatch.setenv("FORGE_TRAIN_TARGET_MODULES", "q_proj,v_proj")
    with pytest.raises(TrainingConfigError, match="FORGE_TRAIN_TARGET_MODULES='q_proj,v_proj': expected a JSON list"):
        load_config().training_overrides()


def test_pipeline_list_setting_that_is_not_json_says_a_json_list_is_expected(forge_home, monkeypatch):
    monkeypatch.setenv("FORGE_EXCLUDED_FOLDERS", ".obsidian,templates")
    with pytest.raises(ValueError, match="FORGE_EXCLUDED_FOLDERS='.obsidian,templates': expected a JSON list"):
        load_config()


def test_misspelled_forge_variable_warns_with_the_nearest_name(forge_home, monkeypatch):
    monkeypatch.setenv("FORGE_NEAR_DUP_THRESHOLDD", "0.8")
    monkeypatch.setenv("FORGE_TRAIN_LERNING_RATE", "1e-4")
    monkeypatch.setenv("FORGE_N_THREADS", "2")  # read by serving: known, no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config()
    messages = [str(w.message) for w in caught if issubclass(w.category, ForgeSettingsWarning)]
    assert any("FORGE_NEAR_DUP_THRESHOLDD" in m and "did you mean FORGE_NEAR_DUP_THRESHOLD?" in m for m in messages)
    assert any("FORGE_TRAIN_LERNING_RATE" in m and "did you mean FORGE_TRAIN_LEARNING_RATE?" in m for m in messages)
    assert not any("FORGE_N_THREADS" in m for m in messages), messages


def test_schedule_settings_live_in_forge_settings(forge_home, monkeypatch):
    monkeypatch.setenv("FORGE_NIGHTLY_CRON", "30 2 * * *")
    monkeypatch.setenv("FORGE_TIMEZONE", "Europe/Paris")
    s = load_config()
    assert (s.nightly_cron, s.schedule_timezone) == ("30 2 * * *", "Europe/Paris")
    monkeypatch.delenv("FORGE_TIMEZONE")
    monkeypatch.setenv("TZ", "America/Chicago")
    assert load_config().schedule_timezone == "America/Chicago"


def test_scheduler_names_are_the_installed_transformers_names():
    from transformers import SchedulerType

    allowed = set(typing.get_args(TrainingConfig.model_fields["lr_scheduler_type"].annotation))
    assert allowed == {s.value for s in SchedulerType}


def test_the_launchpad_of_the_real_lora_adapter_asset_has_every_field():
    """The project's own definitions, not only the generator: the asset's config schema lists every field."""
    from pathlib import Path

    import dagster

    import forge_pipeline.definitions as definitions

    defs = dagster.load_from_defs_folder(path_within_project=Path(definitions.__file__).parent)
    fields = defs.resolve_assets_def("lora_adapter").op.config_schema.as_field().config_type.fields
    assert set(fields) == set(TrainingConfig.model_fields)


def test_checkpoint_skip_layers_is_a_choice_or_a_count_and_leaves_the_fingerprint():
    from forge_pipeline.training.config import TrainingConfigError, resolve_training_config

    assert resolve_training_config({}, "cuda").checkpoint_skip_layers == "auto"
    assert resolve_training_config({"checkpoint_skip_layers": " MAX "}, "cuda").checkpoint_skip_layers == "max"
    assert resolve_training_config({"checkpoint_skip_layers": 3}, "cuda").checkpoint_skip_layers == "3"
    for bad in ("-1", "half", ""):
        with pytest.raises(TrainingConfigError, match="checkpoint_skip_layers=.*layer count"):
            resolve_training_config({"checkpoint_skip_layers": bad}, "cuda")
    # recomputing a layer's activations or keeping them trains the same weights: a cached adapter stays valid
    a = resolve_training_config({"checkpoint_skip_layers": "0"}, "cuda").fingerprint_fields()
    assert a == resolve_training_config({"checkpoint_skip_layers": "max"}, "cuda").fingerprint_fields()
