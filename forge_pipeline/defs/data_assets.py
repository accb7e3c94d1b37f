"""The data half: vault_notes -> extracted_examples -> curated_examples."""

from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from forge_pipeline.curation.curate import curate
from forge_pipeline.extraction.extractor import TrainingDataExtractor
from forge_pipeline.extraction.inventory import VaultError, inventory_notes
from forge_pipeline.extraction.note import scan_options_from_settings
from forge_pipeline.files import atomic_write_json, read_jsonl
from forge_pipeline.orchestration.resources import ForgeSettingsResource
from forge_pipeline.privacy.report import redaction_table, redaction_totals

GROUP = "data"


def _md_table(rows, header) -> MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines))


def _preview(examples: list[dict], n: int = 5) -> MetadataValue:
    return _md_table([(ex["source_file"], ex["kind"], ex["messages"][1]["content"][:100],
                       ex["messages"][-1]["content"][:160]) for ex in examples[:n]],
                     ("source", "kind", "user", "assistant"))


@asset(group_name=GROUP, description="Inventory of the vault's notes: path, sha256, size, mtime.")
def vault_notes(context: AssetExecutionContext, forge: ForgeSettingsResource) -> MaterializeResult:
    config = forge.settings()
    # the same scan options as extraction (private folders and globs), file names redacted as extraction does
    inv = inventory_notes(config.vault_dir, options=scan_options_from_settings(config),
                          phone_regions=tuple(config.phone_regions))
    if not inv["notes"]:
        raise VaultError(f"no Markdown notes found in vault {config.vault_dir}")
    path = atomic_write_json(config.training_data_dir / "vault_inventory.json", inv)
    for w in inv["warnings"]:
        context.log.warning(f"{w['file']}: {w['problem']}")
    return MaterializeResult(metadata={
        "vault": MetadataValue.path(inv["vault"]),
        "inventory": MetadataValue.path(str(path)),
        "notes": len(inv["notes"]),
        "total_bytes": sum(n["size"] for n in inv["notes"]),
        "skipped": _md_table([(s["file"], s["reason"]) for s in inv["skipped"]], ("file", "reason")),
        "warnings": len(inv["warnings"]),
    })


@asset(group_name=GROUP, deps=[vault_notes],
       description="Reflections found in the vault, as chat examples (JSONL), with redaction applied.")
def extracted_examples(context: AssetExecutionContext, forge: ForgeSettingsResource) -> MaterializeResult:
    config = forge.settings()
    extractor = TrainingDataExtractor(config)
    examples = extractor.extract()
    path = extractor.save_to_jsonl()
    stats = extractor.get_stats()
    for w in stats["warnings"]:
        context.log.warning(f"{w['file']}: {w['problem']}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(str(path)),
        "examples": stats["total"],
        "by_kind": MetadataValue.json(stats["by_kind"]),
        "by_tag": _md_table(list(stats["by_tag"].items())[:25], ("tag", "examples")),
        "notes_scanned": stats["notes_scanned"],
        "notes_parsed": stats["notes_parsed"],
        "notes_from_cache": stats["notes_from_cache"],
        "notes_skipped": _md_table([(s["file"], s["reason"]) for s in stats["notes_skipped"]], ("file", "reason")),
        "warnings": _md_table([(w["file"], w["problem"]) for w in stats["warnings"]], ("file", "problem")),
        "redactions": MetadataValue.json(stats["redactions"]),
        "redacted_examples": redaction_totals(examples)["redacted_examples"],
        "redaction_report": _md_table(*redaction_table(examples)),  # counts by type per example, never values
        "preview": _preview(examples),
    })


@asset(group_name=GROUP, deps=[extracted_examples],
       description="Deduplicated, filtered, reviewed examples split into train and eval (stable by id).")
def curated_examples(context: AssetExecutionContext, forge: ForgeSettingsResource) -> MaterializeResult:
    config = forge.settings()
    report = curate(config)
    train, evals = read_jsonl(config.curated_path), read_jsonl(config.eval_path)
    by_tag = Counter(t.lower() for ex in train for t in ex["tags"])
    return MaterializeResult(metadata={
        "train_path": MetadataValue.path(report.train_path),
        "eval_path": MetadataValue.path(report.eval_path),
        "train_examples": report.train_count,
        "eval_examples": report.eval_count,
        "curated_examples": report.train_count + report.eval_count,
        "input_examples": report.input_count,
        "edited_in_review": report.edited,
        "dropped_by_reason": MetadataValue.json(report.dropped_by_reason),
        "dropped": _md_table([(d["source_file"], d["reason"], d.get("duplicate_of", "")) for d in report.dropped[:50]],
                             ("source", "reason", "duplicate of")),
        "by_tag": _md_table(by_tag.most_common(20), ("tag", "examples")),
        "redactions": MetadataValue.json(redaction_totals(train + evals)),
        "redaction_report": _md_table(*redaction_table(train + evals)),  # counts by type per example, never values
        "preview": _preview(train),
    })
