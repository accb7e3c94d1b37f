"""model_evaluation: the candidate against the live model and the base, as served (llama.cpp), and the gate
decision that the deploy sensor obeys. A refused candidate stays visible: its materialization says
"refused" with one reason per failed rule, and its gate check fails (as a warning: the run itself did its job)."""
import dagster as dg

from forge_pipeline.defs.model_export import model_export
from forge_pipeline.evaluation.gate import latest_key, load_decision
from forge_pipeline.evaluation.run import run_evaluation
from forge_pipeline.export.manifest import read_last_export
from forge_pipeline.orchestration.concurrency import GPU_POOL
from forge_pipeline.orchestration.metadata import evaluation_metadata
from forge_pipeline.orchestration.resources import ForgeSettingsResource


@dg.asset(group_name="model", deps=[model_export], pool=GPU_POOL, kinds={"llama.cpp"},
          description="The candidate scored against the live model and the base (eval loss, fidelity, probes, "
                      "regurgitation); its decision gates the deploy.")
def model_evaluation(context: dg.AssetExecutionContext, forge: ForgeSettingsResource) -> dg.MaterializeResult:
    s = forge.settings()
    report, decision, folder = run_evaluation(s, log=context.log.info)
    manifest, version_dir = read_last_export(s.models_dir, s.home_dir)
    base = manifest.base_path(s.home_dir)
    target = {"version": manifest.version, "sha256": manifest.sha256, "path": str(manifest.gguf_path(version_dir)),
              "base_path": str(base) if base else None}
    metadata = evaluation_metadata(report, decision, folder, target)
    context.log.info(summary(metadata, target, decision.deploy))  # the run's last word in the terminal
    return dg.MaterializeResult(metadata=metadata)


def summary(md: dict, target: dict, deploy: bool) -> str:
    def num(key):
        v = md.get(key)
        return "–" if v is None else f"{v.value:g}"

    verdict = "passed the gate" if deploy else md["decision"]
    nxt = "`forge up` deploys it and keeps it served (or `forge serve`)" if deploy else \
        "the live model stays; see the reasons above"
    return (f"summary: model {target['version']} at {target['path']}; eval loss {num('eval_loss_candidate')} "
            f"(live {num('eval_loss_live')}, base {num('eval_loss_base')}); {verdict}; next: {nxt}")


@dg.asset_check(asset=model_evaluation, blocking=False,
                description="The candidate passed the gate (better than the live model, faithful, not looping or "
                            "copying); when not, the reasons, and the live model keeps serving.")
def candidate_passes_gate(forge: ForgeSettingsResource) -> dg.AssetCheckResult:
    s = forge.settings()
    key = latest_key(s.evaluation_dir)
    decision = load_decision(s.evaluation_dir, key) if key else None
    if decision is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"problem": "no evaluation decision was stored"})
    return dg.AssetCheckResult(passed=decision.deploy, severity=dg.AssetCheckSeverity.WARN, metadata={
        "reasons": "\n".join(decision.reasons) or "none", "compared_with": decision.against})
