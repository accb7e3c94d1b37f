"""The trainer as its own process, launched through Dagster Pipes (a subprocess by default; a Kubernetes or
cloud Pipes client can launch the same module on a GPU node). A crash here fails the Dagster step.

    python -m forge_pipeline.training.pipes_entry   # reads its parameters from the Pipes context

Extras: ``overrides`` (a dict of TrainingConfig fields, only what the user set), ``data_path``,
``eval_path``, ``output_dir``, ``home``. The config is resolved here, for the device this process trains
on: the launching process may have no GPU, and its defaults would be the CPU's.
"""
from __future__ import annotations

from pathlib import Path


def config_from_extras(extras: dict):
    """The TrainingConfig for this process's device from the Pipes extras (raises TrainingConfigError)."""
    from forge_pipeline.training.base_model import device_name
    from forge_pipeline.training.config import resolve_training_config

    # "config" is what launchers sent before overrides existed (a full config): still honoured, as overrides
    overrides = extras["overrides"] if "overrides" in extras else extras.get("config")
    return resolve_training_config(overrides or {}, device_name())


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    from forge_pipeline.config import load_config
    from forge_pipeline.training.measurement import quiet_libraries

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        # before transformers loads: no Hugging Face bars or warnings in the step's stderr unless FORGE_VERBOSE;
        # the progress lines ("step x/N, loss, ETA") reach the run's event log through pipes.log
        quiet_libraries(load_config(home=extras.get("home")).verbose, own_bars=False)
        from forge_pipeline.training.trainer import run_training

        cfg = config_from_extras(extras)
        pipes.log.info(f"training config: {cfg.summary()} (all settings: the adapter's manifest.json)")
        report = run_training(Path(extras["data_path"]), Path(extras["output_dir"]), cfg,
                              eval_path=Path(extras["eval_path"]) if extras.get("eval_path") else None,
                              home=Path(extras["home"]), log=pipes.log.info)
        metrics = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float, str)) and v is not None}
        pipes.report_asset_materialization(
            metadata={"status": report.status, "backend": report.backend, "adapter_dir": report.final_dir,
                      "manifest": report.manifest_path, "fingerprint": report.fingerprint, **metrics},
            data_version=report.fingerprint[:16])


if __name__ == "__main__":
    main()
