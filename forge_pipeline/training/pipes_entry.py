"""The trainer as its own process, launched through Dagster Pipes (a subprocess by default; a Kubernetes or
cloud Pipes client can launch the same module on a GPU node). A crash here fails the Dagster step.

    python -m forge_pipeline.training.pipes_entry   # reads its parameters from the Pipes context
"""
from __future__ import annotations

import json
from pathlib import Path


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    from forge_pipeline.training.config import TrainingConfig
    from forge_pipeline.training.trainer import run_training

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        cfg = TrainingConfig(**extras["config"])

        def on_metrics(m: dict) -> None:
            if "loss" in m or "eval_loss" in m:
                pipes.log.info("metrics " + json.dumps(m))

        report = run_training(Path(extras["data_path"]), Path(extras["output_dir"]), cfg,
                              eval_path=Path(extras["eval_path"]) if extras.get("eval_path") else None,
                              home=Path(extras["home"]), log=pipes.log.info, on_metrics=on_metrics)
        metrics = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float, str)) and v is not None}
        pipes.report_asset_materialization(
            metadata={"status": report.status, "backend": report.backend, "adapter_dir": report.final_dir,
                      "manifest": report.manifest_path, "fingerprint": report.fingerprint, **metrics},
            data_version=report.fingerprint[:16])


if __name__ == "__main__":
    main()
