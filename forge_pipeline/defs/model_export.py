"""model_export: the adapter -> a versioned, validated GGUF under FORGE_HOME/models (by default a LoRA adapter
GGUF served on a cached base GGUF; `merged` for one full file)."""
import dagster as dg

from forge_pipeline.defs.training import lora_adapter
from forge_pipeline.export.pipeline import export_model
from forge_pipeline.orchestration.concurrency import GPU_POOL
from forge_pipeline.orchestration.launch_config import ExportRunConfig, plain
from forge_pipeline.orchestration.metadata import export_metadata
from forge_pipeline.orchestration.resources import ForgeSettingsResource


@dg.asset(group_name="model", deps=[lora_adapter], pool=GPU_POOL, kinds={"gguf", "llama.cpp"},
          description="The adapter exported for serving: an adapter GGUF on a cached base GGUF (or one merged "
                      "GGUF), validated in llama.cpp, versioned under FORGE_HOME/models.")
def model_export(context: dg.AssetExecutionContext, config: ExportRunConfig, forge: ForgeSettingsResource) -> dg.MaterializeResult:
    s = forge.settings()
    options = plain(config.model_dump())
    report = export_model(s.adapter_dir, s.models_dir, quant=options.get("quantization"), name=options["name"],
                          merged=options.get("merged", False), eval_path=s.eval_path, home=s.home_dir,
                          base_models_dir=s.base_models_dir, serving_dir=s.serving_dir,
                          keep_versions=s.keep_model_versions, log=context.log.info,
                          # model_evaluation, downstream, gates the deploy on the served file's KLD
                          parity=options.get("merged", False),
                          on_stage=lambda stage: context.log.info(f"export: {stage}"))
    if report.status == "cached":
        context.log.info(f"adapter unchanged: reusing {report.version}, no export needed")
    return dg.MaterializeResult(metadata=export_metadata(report), data_version=dg.DataVersion(report.sha256[:16]))
