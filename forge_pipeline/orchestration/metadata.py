"""How the assets present themselves in the Dagster UI: the headline numbers first, typed (float/int, so the
Plots tab draws them night after night) and rounded for reading; tables where the data is tabular; details
after. Only numbers, names and paths: no text from the vault reaches metadata here."""
from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg


def md_table(rows, header) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _num(x, digits: int = 4):
    """A typed, rounded number (None stays out: Dagster metadata has no typed null)."""
    if isinstance(x, bool) or x is None:
        return None
    return round(float(x), digits) if isinstance(x, float) else int(x) if isinstance(x, int) else None


def _headline(pairs: list[tuple[str, object, int]]) -> dict:
    out = {}
    for key, value, digits in pairs:
        v = _num(value, digits)
        if v is not None:
            out[key] = dg.MetadataValue.float(v) if isinstance(v, float) else dg.MetadataValue.int(v)
    return out


def _png(path: Path, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


def adapter_metadata(reported: dict) -> dict:
    """lora_adapter: eval loss vs the base first, then how it was trained, then the details."""
    from forge_pipeline.training.manifest import AdapterManifest

    adapter_dir = Path(reported["adapter_dir"])
    m = AdapterManifest.read(adapter_dir)
    eval_loss, base = m.eval_loss, m.base_eval_loss
    gain = 100 * (base - eval_loss) / base if eval_loss is not None and base else None
    out = _headline([("eval_loss", eval_loss, 4), ("base_eval_loss", base, 4), ("improvement_vs_base_pct", gain, 2),
                     ("train_loss", m.metrics.get("train_loss"), 4), ("steps", m.metrics.get("global_step"), 0),
                     ("train_examples", getattr(m.data, "train_examples", None), 0)])
    out.update({
        "status": reported.get("status"), "backend": m.backend, "device": m.device, "base_model": m.base_model.name,
        "hyperparameters": md_table(sorted(m.hyperparameters.items()), ("setting", "value")),
        "versions": md_table(sorted(m.versions.items()), ("library", "version")),
        "adapter_dir": dg.MetadataValue.path(str(adapter_dir)), "fingerprint": m.fingerprint,
    })
    # how the run used the machine: a slow night or a near-full GPU shows here before anyone opens the manifest
    run = [(label, m.metrics[key]) for key, label in (
        ("batch_layout", "batch layout"), ("steady_tokens_per_s", "tokens/s (steady)"), ("train_s", "training s"),
        ("peak_memory_gib", "peak memory GiB"), ("uncheckpointed_layers", "layers keeping activations"))
        if m.metrics.get(key) is not None]
    if run:
        out["training_run"] = md_table(run, ("measure", "value"))
    if m.base_model.seeded_turn_tokens:  # the base never trained them (training/turn_tokens.py)
        out["seeded_turn_tokens"] = ", ".join(f"{t} from {src}" for t, src in m.base_model.seeded_turn_tokens.items())
    if (adapter_dir / "loss_curve.png").exists():
        out["loss_curve"] = _png(adapter_dir / "loss_curve.png", "loss curve")
    return out


def export_metadata(report) -> dict:
    """model_export: what was made and whether it validated, then where it is."""
    v = report.validation or {}
    out = _headline([("size_mb", report.size_mb, 1), ("perplexity_ratio", v.get("perplexity_ratio"), 4),
                     ("perplexity_gguf", v.get("gguf_perplexity"), 3), ("perplexity_hf", v.get("hf_perplexity"), 3)])
    out.update({
        "version": report.version, "kind": report.kind, "quantization": report.quantization, "status": report.status,
        "path": dg.MetadataValue.path(report.gguf_path), "sha256": report.sha256,
        "parity_tolerance": v.get("parity_tolerance"), "fidelity_checked_by": v.get("parity_by"),
        "loads": bool(v.get("loads")),
        "has_chat_template": bool(v.get("has_chat_template")),
        "timings_s": md_table(sorted(report.timings.items()), ("stage", "seconds")),
        "manifest": dg.MetadataValue.path(report.manifest_path),
    })
    if report.base_gguf:
        out["base_path"] = dg.MetadataValue.path(report.base_gguf)
    return {k: v for k, v in out.items() if v is not None}


def evaluation_metadata(report, decision, folder: Path, target: dict) -> dict:
    """model_evaluation: the decision and the headline numbers (candidate/live/base eval loss, improvement,
    KLD, loop rate, regurgitation) first; the reasons as a table; then what the deploy sensor needs."""
    from forge_pipeline.evaluation.nightly import headline

    h = headline(report, decision)
    out = {"deploy": bool(decision.deploy),
           "decision": ("deploy: " if decision.deploy else "refused: ") + ("; ".join(decision.reasons) or "every rule held")}
    out.update(_headline([(k, h.get(k), 5 if k in ("kld", "drift_kld") else 4) for k in (
        "eval_loss_candidate", "eval_loss_live", "eval_loss_base", "improvement_vs_live_pct", "improvement_vs_base_pct",
        "kld", "top1_agreement", "loop_rate", "invented_turns", "regurgitation_share", "drift_kld",
        "prompt_gain_candidate", "prompt_gain_live", "prompt_gain_base", "eval_examples",
        "evaluation_s")]))
    out["rules"] = md_table([("held", r) for r in decision.passed] + [("failed", r) for r in decision.reasons],
                            ("", "rule"))
    out["compared_with"] = decision.against
    report_md = folder / "report.md"
    if report_md.exists():
        out["report"] = dg.MetadataValue.path(str(report_md))
    for key in ("version", "sha256"):
        if target.get(key):
            out[key] = target[key]
    out["path"] = dg.MetadataValue.path(target["path"])
    if target.get("base_path"):
        out["base_path"] = dg.MetadataValue.path(target["base_path"])
    return out


def preview(examples: list[dict], n: int = 6) -> dg.MetadataValue:
    """A few examples across the vault's top-level folders, the biggest first (so the journal, most of a
    vault, leads), round-robin; the text as stored, so redactions show as their placeholders."""
    from collections import defaultdict

    by_folder: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        by_folder[ex["source_file"].split("/", 1)[0] if "/" in ex["source_file"] else "(top)"].append(ex)
    folders = sorted(by_folder, key=lambda f: (-len(by_folder[f]), f))
    picked: list[dict] = []
    for i in range(n):
        for f in folders:
            if len(picked) < n and i < len(by_folder[f]):
                picked.append(by_folder[f][i])
    return md_table([(ex["source_file"], ex["kind"], ex["messages"][1]["content"][:100],
                      ex["messages"][-1]["content"][:160]) for ex in picked], ("source", "kind", "user", "assistant"))


def counts_table(counts: dict, what: str = "count") -> dg.MetadataValue:
    return md_table(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), ("", what))


def inventory_metadata(inv: dict, path: Path) -> dict:
    return {**_headline([("notes", len(inv["notes"]), 0), ("skipped", len(inv["skipped"]), 0),
                         ("warnings", len(inv["warnings"]), 0),
                         ("total_mb", sum(n["size"] for n in inv["notes"]) / 2**20, 2)]),
            "vault": dg.MetadataValue.path(inv["vault"]), "inventory": dg.MetadataValue.path(str(path)),
            "skipped_notes": md_table([(s["file"], s["reason"]) for s in inv["skipped"]], ("file", "reason"))}


def extraction_metadata(report, examples: list[dict]) -> dict:
    from forge_pipeline.privacy.report import redaction_table, redaction_totals

    return {**_headline([("examples", report.total, 0), ("notes_scanned", report.notes_scanned, 0),
                         ("notes_parsed", report.notes_parsed, 0), ("notes_from_cache", report.notes_from_cache, 0),
                         ("redacted_examples", redaction_totals(examples)["redacted_examples"], 0),
                         ("warnings", len(report.warnings), 0)]),
            "preview": preview(examples),
            "by_kind": counts_table(report.by_kind, "examples"),
            "by_tag": md_table(sorted(report.by_tag.items(), key=lambda kv: -kv[1])[:25], ("tag", "examples")),
            "redactions": counts_table(report.redactions, "replaced"),
            "redaction_report": md_table(*redaction_table(examples)),  # counts by type per example, never values
            "hints": dg.MetadataValue.md("\n".join(f"- {h}" for h in report.hints) or "none"),
            "notes_skipped": md_table([(s["file"], s["reason"]) for s in report.notes_skipped], ("file", "reason")),
            "warning_list": md_table([(w["file"], w["problem"]) for w in report.warnings], ("file", "problem")),
            "path": dg.MetadataValue.path(report.output)}


def curation_metadata(report, train: list[dict], evals: list[dict]) -> dict:
    from collections import Counter

    from forge_pipeline.privacy.report import redaction_table

    by_tag = Counter(t.lower() for ex in train for t in ex["tags"])
    return {**_headline([("train_examples", report.train_count, 0), ("eval_examples", report.eval_count, 0),
                         ("input_examples", report.input_count, 0), ("dropped", len(report.dropped), 0),
                         ("edited_in_review", report.edited, 0)]),
            "preview": preview(train),
            "dropped_by_reason": counts_table(report.dropped_by_reason, "examples"),
            "dropped_examples": md_table([(d["source_file"], d["reason"], d.get("duplicate_of", ""))
                                          for d in report.dropped[:50]], ("source", "reason", "kept instead")),
            "by_tag": md_table(by_tag.most_common(20), ("tag", "examples")),
            "redaction_report": md_table(*redaction_table(train + evals)),
            "train_path": dg.MetadataValue.path(report.train_path), "eval_path": dg.MetadataValue.path(report.eval_path)}
