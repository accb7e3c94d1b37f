"""Blocking checks before a GGUF counts as ready; each wraps a pure rule from forge_pipeline.export.validate."""
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from forge_pipeline.defs.model_export import model_export
from forge_pipeline.defs.training import lora_adapter
from forge_pipeline.export.export import last_export
from forge_pipeline.export.validate import adapter_problems, degenerate_problems, load_problems, parity_problems
from forge_pipeline.orchestration.resources import ForgeSettingsResource


def _validation(forge: ForgeSettingsResource) -> dict:
    export = last_export(forge.settings().models_dir)
    return (export or {}).get("validation", {})


def _result(problems: list[str], severity=AssetCheckSeverity.ERROR, **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, severity=severity,
                            metadata={"problems": "\n".join(problems) or "none", **metadata})


@asset_check(asset=model_export, blocking=True, description="The GGUF loads in llama-cpp-python and carries the chat template.")
def gguf_loads_with_chat_template(forge: ForgeSettingsResource) -> AssetCheckResult:
    return _result(load_problems(_validation(forge)))


# A warning, not a block: whether the answers are good enough to deploy is model_evaluation's decision, on the
# whole probe set with serving's sampling and relative to the live model (a short CPU run can loop on one of
# three greedy answers here and still be the better model; the gate then compares loop rates).
@asset_check(asset=model_export, blocking=False,
             description="Greedy answers to eval prompts are non-empty and not looping (a warning; the evaluation "
                         "gate decides).")
def gguf_answers_not_degenerate(forge: ForgeSettingsResource) -> AssetCheckResult:
    v = _validation(forge)
    return _result(degenerate_problems(v), severity=AssetCheckSeverity.WARN, answers=len(v.get("answers") or []))


@asset_check(asset=model_export, blocking=True,
             description="A merged GGUF's perplexity on the eval set within tolerance of the merged model (q8_0 "
                         "1.02x, q4_k_m 1.10x); an adapter's fidelity is model_evaluation's KLD instead.")
def gguf_perplexity_parity(forge: ForgeSettingsResource) -> AssetCheckResult:
    v = _validation(forge)
    return _result(parity_problems(v), ratio=v.get("perplexity_ratio"), tolerance=v.get("parity_tolerance"),
                   **({"fidelity_checked_by": v["parity_by"]} if v.get("parity_by") else {}))


@asset_check(asset=lora_adapter, blocking=False, description="The adapter's eval loss beats the base model's (warning if not).")
def adapter_beats_base(forge: ForgeSettingsResource) -> AssetCheckResult:

    from forge_pipeline.training.manifest import AdapterManifest

    manifest = AdapterManifest.read_if_exists(forge.settings().adapter_dir)
    m = manifest.metrics if manifest else {}
    return _result(adapter_problems(m.get("eval_loss"), m.get("base_eval_loss")), severity=AssetCheckSeverity.WARN,
                   eval_loss=m.get("eval_loss"), base_eval_loss=m.get("base_eval_loss"))


MODEL_CHECKS = [gguf_loads_with_chat_template, gguf_answers_not_degenerate, gguf_perplexity_parity, adapter_beats_base]
