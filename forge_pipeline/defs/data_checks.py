"""Asset checks on the curated set; each wraps a pure validator from forge_pipeline.curation.validators."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from forge_pipeline.curation.validators import (
    CheckOutcome,
    check_disjoint,
    check_minimum_examples,
    check_personal_data,
    check_schema,
    validate_jsonl_rows,
)
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


def _curated(forge: ForgeSettingsResource) -> tuple[list[dict], list[dict]]:
    c = forge.settings()
    return read_jsonl(c.curated_path), read_jsonl(c.eval_path)


def _outcome(o: CheckOutcome) -> AssetCheckResult:
    # the same CheckOutcome `forge curate` / `forge train` act on (curation/validators.py: check_curated_set)
    return AssetCheckResult(passed=o.passed, severity=AssetCheckSeverity.ERROR if o.blocking else AssetCheckSeverity.WARN,
                            metadata={"problems": len(o.problems), "first_problems": "\n".join(o.problems[:20]),
                                      **o.metadata})


@asset_check(asset=curated_examples, blocking=True, description="Curated train and eval lines have the documented schema.")
def curated_jsonl_schema(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    return _outcome(check_schema(*_curated(forge), (c.curated_path.name, c.eval_path.name)))


@asset_check(asset=curated_examples, blocking=True,
             description="At least FORGE_MIN_CURATED_EXAMPLES (50) curated examples; severity FORGE_MIN_EXAMPLES_SEVERITY.")
def minimum_curated_examples(forge: ForgeSettingsResource) -> AssetCheckResult:
    c = forge.settings()
    return _outcome(check_minimum_examples(*_curated(forge), c.min_curated_examples, c.min_examples_severity))


@asset_check(asset=curated_examples, blocking=True,
             description="No personal data or secret left in any field of any row (a detector independent of the "
                         "redactor: forge_pipeline/privacy/check.py).")
def no_personal_data_in_curated(forge: ForgeSettingsResource) -> AssetCheckResult:
    return _outcome(check_personal_data(*_curated(forge)))


@asset_check(asset=curated_examples, blocking=True, description="Train and eval share no example and no text.")
def train_eval_disjoint(forge: ForgeSettingsResource) -> AssetCheckResult:
    return _outcome(check_disjoint(*_curated(forge)))


DATA_CHECKS = [extracted_jsonl_schema, curated_jsonl_schema, minimum_curated_examples, no_personal_data_in_curated,
               train_eval_disjoint]
