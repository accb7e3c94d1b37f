"""The data half: vault_notes -> extracted_examples -> curated_examples. Each body is one call into the
plain-Python stage plus its metadata (forge_pipeline.orchestration.metadata)."""
import dagster as dg

from forge_pipeline.curation.curate import curate
from forge_pipeline.extraction.extractor import run_extraction
from forge_pipeline.extraction.inventory import VaultError, inventory_notes
from forge_pipeline.extraction.note import scan_options_from_settings
from forge_pipeline.files import atomic_write_json, read_jsonl
from forge_pipeline.orchestration.metadata import curation_metadata, extraction_metadata, inventory_metadata
from forge_pipeline.orchestration.resources import ForgeSettingsResource

GROUP = "data"


@dg.asset(group_name=GROUP, kinds={"markdown"}, description="Inventory of the vault's notes: path, sha256, size, mtime.")
def vault_notes(context: dg.AssetExecutionContext, forge: ForgeSettingsResource) -> dg.MaterializeResult:
    config = forge.settings()
    # the same scan options as extraction (private folders and globs), file names redacted as extraction does
    inv = inventory_notes(config.vault_dir, options=scan_options_from_settings(config),
                          phone_regions=tuple(config.phone_regions))
    if not inv["notes"]:
        raise VaultError(f"no Markdown notes found in vault {config.vault_dir}")
    path = atomic_write_json(config.training_data_dir / "vault_inventory.json", inv)
    for w in inv["warnings"]:
        context.log.warning(f"{w['file']}: {w['problem']}")
    return dg.MaterializeResult(metadata=inventory_metadata(inv, path))


@dg.asset(group_name=GROUP, deps=[vault_notes], kinds={"jsonl"},
          description="Reflections found in the vault, as chat examples (JSONL), with redaction applied.")
def extracted_examples(context: dg.AssetExecutionContext, forge: ForgeSettingsResource) -> dg.MaterializeResult:
    report = run_extraction(forge.settings())
    for w in report.warnings:
        context.log.warning(f"{w['file']}: {w['problem']}")
    for hint in report.hints:
        context.log.info(hint)
    return dg.MaterializeResult(metadata=extraction_metadata(report, read_jsonl(report.output)))


@dg.asset(group_name=GROUP, deps=[extracted_examples], kinds={"jsonl"},
          description="Deduplicated, filtered, reviewed examples split into train and eval (stable by id).")
def curated_examples(context: dg.AssetExecutionContext, forge: ForgeSettingsResource) -> dg.MaterializeResult:
    config = forge.settings()
    report = curate(config)
    return dg.MaterializeResult(metadata=curation_metadata(report, read_jsonl(config.curated_path),
                                                           read_jsonl(config.eval_path)))
