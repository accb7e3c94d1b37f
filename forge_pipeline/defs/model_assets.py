"""The model half: curated_examples -> lora_adapter -> gguf_model. Both are GPU-bound (pool "gpu")."""
import base64
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from forge_pipeline.defs.data_assets import curated_examples
from forge_pipeline.export.export import export_model
from forge_pipeline.export.gguf import default_quantization
from forge_pipeline.orchestration.concurrency import GPU_POOL
from forge_pipeline.orchestration.launch_config import ExportRunConfig, TrainingRunConfig, plain
from forge_pipeline.orchestration.resources import ForgeSettingsResource, TrainerLauncher
from forge_pipeline.training.base_model import cuda_available
from forge_pipeline.training.config import (
    TrainingConfigError,
    overrides_from_launchpad,
    validate_overrides,
)
from forge_pipeline.training.manifest import AdapterManifest

GROUP = "model"


def _png_markdown(path: Path) -> MetadataValue:
    data = base64.b64encode(path.read_bytes()).decode()
    return MetadataValue.md(f"![loss curve](data:image/png;base64,{data})")


@asset(group_name=GROUP, deps=[curated_examples], pool=GPU_POOL,
       description="LoRA adapter trained on the curated set, in its own process (Dagster Pipes).")
def lora_adapter(context: AssetExecutionContext, config: TrainingRunConfig, forge: ForgeSettingsResource,
                 trainer: TrainerLauncher) -> MaterializeResult:
    settings = forge.settings()
    # Only what was set (FORGE_TRAIN_* under the launchpad's values) goes to the trainer, which resolves it for
    # its own device; bad values fail here, before the trainer process starts.
    overrides = {**settings.training_overrides(), **overrides_from_launchpad(config.model_dump())}
    problems = validate_overrides(overrides)
    if problems:
        raise TrainingConfigError(problems)
    context.log.info(f"training overrides: {overrides}")
    result = trainer.run(context, extras={
        "overrides": overrides, "data_path": str(settings.curated_path),
        "eval_path": str(settings.eval_path), "output_dir": str(settings.training_dir), "home": str(settings.home_dir),
    }).get_materialize_result()
    md = dict(result.metadata or {})
    reported = {k: getattr(v, "value", v) for k, v in md.items()}  # Pipes values arrive as MetadataValues
    adapter_dir = Path(reported["adapter_dir"])
    manifest = AdapterManifest.read(adapter_dir)
    if reported.get("status") == "cached":
        context.log.info("data, config and base model unchanged since the last adapter: training skipped")
    extra = {"hyperparameters": MetadataValue.json(manifest.hyperparameters),
             "base_model": manifest.base_model.name, "versions": MetadataValue.json(manifest.versions)}
    if (adapter_dir / "loss_curve.png").exists():
        extra["loss_curve"] = _png_markdown(adapter_dir / "loss_curve.png")
    return MaterializeResult(metadata={**md, **extra}, data_version=result.data_version)


@asset(group_name=GROUP, deps=[lora_adapter], pool=GPU_POOL,
       description="Merged 16-bit model converted to GGUF and quantized, versioned under FORGE_HOME/models.")
def gguf_model(context: AssetExecutionContext, config: ExportRunConfig, forge: ForgeSettingsResource) -> MaterializeResult:
    settings = forge.settings()
    adapter_dir = settings.adapter_dir
    base = AdapterManifest.read(adapter_dir).base_model.name
    quant = plain(config.model_dump()).get("quantization") or default_quantization(base, cuda_available())
    report = export_model(adapter_dir, settings.models_dir, quant=quant, name=config.name,
                          eval_path=settings.eval_path, log=context.log.info,
                          on_stage=lambda stage: context.log.info(f"export: {stage}"))
    if report.status == "cached":
        context.log.info(f"adapter unchanged: reusing the existing GGUF {report.gguf_path}, no export needed")
    v = report.validation
    from dagster import DataVersion

    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(report.gguf_path), "version": report.version, "status": report.status,
            "sha256": report.sha256, "size_mb": report.size_mb, "quantization": report.quantization,
            "perplexity_hf": v.get("hf_perplexity"), "perplexity_gguf": v.get("gguf_perplexity"),
            "perplexity_ratio": v.get("perplexity_ratio"), "parity_tolerance": v.get("parity_tolerance"),
            "sample_answers": MetadataValue.md("\n\n".join(f"> {a[:300]}" for a in v.get("answers", [])) or "-"),
            "timings": MetadataValue.json(report.timings), "manifest": MetadataValue.path(report.manifest_path),
        },
        data_version=DataVersion(report.sha256[:16]),
    )
