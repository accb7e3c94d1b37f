"""Asset checks on the curated set; each wraps a pure validator from forge_pipeline.curation.validators."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from forge_pipeline.curation.validators import overlap_problems, personal_data_problems, validate_jsonl_rows
from forge_pipeline.defs.data_assets import curated_examples, extracted_examples
from forge_pipeline.files import read_jsonl
from forge_pipeline.orchestration.resources import ForgeSettingsResource


def _result(problems: list[str], **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, metadata={"problems": len(problems),
                                                           "first_problems": "\n".join(problems[:20]), **metadata})


@asset_check(asset=extracted_examples, blocking=True, description="Every extracted line has the documented schema.")
def extracted_jsonl_schema(forge: ForgeSettingsResource) -> AssetCheckResult:
    path = forge.settings().extracted_path
    return _result(validate_jsonl_rows(read_jsonl(path), path.name))


@asset_check(asset=curated_examples, blocking=True, description="Curated train and eval lines have the documented schema.")
def curated_jsonl_schema(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    return _result(validate_jsonl_rows(read_jsonl(c.curated_path), c.curated_path.name)
                   + validate_jsonl_rows(read_jsonl(c.eval_path), c.eval_path.name))


@asset_check(asset=curated_examples, blocking=True,
             description="At least FORGE_MIN_CURATED_EXAMPLES (50) curated examples; severity FORGE_MIN_EXAMPLES_SEVERITY.")
def minimum_curated_examples(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    n = len(read_jsonl(c.curated_path)) + len(read_jsonl(c.eval_path))
    severity = AssetCheckSeverity.WARN if c.min_examples_severity.upper().startswith("WARN") else AssetCheckSeverity.ERROR
    return AssetCheckResult(passed=n >= c.min_curated_examples, severity=severity,
                            metadata={"curated_examples": n, "minimum": c.min_curated_examples})


@asset_check(asset=curated_examples, blocking=True, description="No email, phone, card, key or URL token left in any turn.")
def no_personal_data_in_curated(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    return _result(personal_data_problems(read_jsonl(c.curated_path) + read_jsonl(c.eval_path)))


@asset_check(asset=curated_examples, blocking=True, description="Train and eval share no example and no text.")
def train_eval_disjoint(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    return _result(overlap_problems(read_jsonl(c.curated_path), read_jsonl(c.eval_path)))


DATA_CHECKS = [extracted_jsonl_schema, curated_jsonl_schema, minimum_curated_examples, no_personal_data_in_curated,
               train_eval_disjoint]
