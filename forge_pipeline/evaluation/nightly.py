"""The nightly report a person reads in one screen (markdown), the headline numbers for Dagster's metadata,
and the table `forge eval` prints. Pure functions of an EvaluationReport and its GateDecision."""
from __future__ import annotations

from pathlib import Path

from forge_pipeline.evaluation.report import EvaluationReport, GateDecision

ROLES = ("base", "live", "candidate")


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def headline(report: EvaluationReport, decision: GateDecision) -> dict[str, float | int | bool | None]:
    """Typed, rounded numbers for metadata (Dagster plots them night after night). No text from the vault."""
    c, live, base = report.candidate, report.live, report.base

    def gain(ref):  # % improvement of eval loss (positive = candidate lower)
        if ref is None or ref.eval_loss is None or c.eval_loss is None or ref.eval_loss == 0:
            return None
        return round(100 * (ref.eval_loss - c.eval_loss) / ref.eval_loss, 2)

    return {
        "deploy": decision.deploy,
        "eval_loss_candidate": None if c.eval_loss is None else round(c.eval_loss, 4),
        "eval_loss_live": None if live is None or live.eval_loss is None else round(live.eval_loss, 4),
        "eval_loss_base": None if base is None or base.eval_loss is None else round(base.eval_loss, 4),
        "improvement_vs_live_pct": gain(live),
        "improvement_vs_base_pct": gain(base),
        "kld": None if report.fidelity is None else round(report.fidelity.kld_mean, 5),
        "top1_agreement": None if report.fidelity is None else round(report.fidelity.top1_agreement, 4),
        "loop_rate": round(c.loop_rate, 3),
        "invented_turns": c.count("invented_turn"),
        "regurgitation_share": round(c.regurgitation_share, 3),
        "drift_kld": None if c.drift_kld is None else round(c.drift_kld, 4),
        "prompt_gain_candidate": None if c.prompt_gain is None else round(c.prompt_gain, 4),
        "prompt_gain_live": None if live is None or live.prompt_gain is None else round(live.prompt_gain, 4),
        "prompt_gain_base": None if base is None or base.prompt_gain is None else round(base.prompt_gain, 4),
        "eval_examples": report.eval_examples,
        "evaluation_s": report.timings.get("total_s"),
    }


def table(report: EvaluationReport) -> str:
    """The per-model comparison as a markdown table (also what `forge eval` prints)."""
    rows = [m for m in (report.models.get(r) for r in ROLES) if m is not None]
    head = "| | " + " | ".join(m.role for m in rows) + " |\n|---|" + "---|" * len(rows) + "\n"
    lines = [
        ("eval loss", [_f(m.eval_loss, 4) for m in rows]),
        ("probe answers looping", [f"{m.count('loop')}/{len(m.probes)}" for m in rows]),
        ("inventing turns", [f"{m.count('invented_turn')}/{len(m.probes)}" for m in rows]),
        ("empty / cut at limit", [f"{m.count('empty')} / {m.count('cut')}" for m in rows]),
        ("longest copy from training (chars)", [str(m.regurgitation_max_chars) for m in rows]),
        ("prompt gain (nats/token)", [_f(m.prompt_gain, 3) for m in rows]),
        ("style similarity", [_f(m.style_similarity, 2) for m in rows]),
        ("drift from base (KLD)", [_f(m.drift_kld, 4) for m in rows]),
    ]
    return head + "".join(f"| {name} | " + " | ".join(vals) + " |\n" for name, vals in lines)


def _loss_plot(report: EvaluationReport, path: Path) -> Path | None:
    if len(report.loss_curve) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=100)
    steps, losses = zip(*report.loss_curve)
    ax.plot(steps, losses, "o-", label="candidate eval loss (step 0 = base)")
    if report.live is not None and report.live.eval_loss is not None:
        ax.axhline(report.live.eval_loss, color="gray", linestyle="--", label="live (served)")
    ax.set_xlabel("training step")
    ax.set_ylabel("eval loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _cell(text: str, limit: int = 220) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " …"


def markdown(report: EvaluationReport, decision: GateDecision, folder: Path | None = None) -> str:
    """The one-screen nightly report. With ``folder``, the loss curve is also drawn to folder/loss_curve.png."""
    verdict = "**DEPLOY**" if decision.deploy else "**KEEP THE LIVE MODEL**" if report.live else "**NOT DEPLOYED**"
    out = [f"# Nightly evaluation {report.created}", "", f"Decision: {verdict} (compared with {decision.against})", ""]
    out += [f"- {r}" for r in decision.reasons] or ["- every rule held: " + "; ".join(decision.passed)]
    fid, rt = report.fidelity, report.round_trip
    out += ["", table(report).rstrip(), "",
            f"Fidelity of the served file: KLD {_f(fid and fid.kld_mean, 5)} ({fid and fid.quantization}), top-1 "
            f"agreement {_f(fid and fid.top1_agreement and 100 * fid.top1_agreement, 1)}%. Template round trip: "
            f"{'exact' if rt.ok else 'FAILED'} on {rt.conversations} conversations; end of turn "
            f"{rt.end_of_turn_token!r} {'stops' if rt.end_of_turn_is_eog else 'does NOT stop'} generation.",
            f"Eval split: {report.eval_examples} conversations, {report.eval_tokens} answer tokens. Evaluation took "
            f"{report.timings.get('total_s', 0):.0f} s."]
    out += [f"The {m.role} model's eval loss was not measured: {m.not_scored}." for m in report.models.values()
            if m.not_scored]
    if report.loss_curve:
        out += ["", "Loss curve (eval loss by training step, step 0 = base): "
                + ", ".join(f"{s}: {v:.3f}" for s, v in report.loss_curve)]
        if folder is not None and _loss_plot(report, Path(folder) / "loss_curve.png"):
            out += ["", "![loss curve](loss_curve.png)"]
    dc = report.data_changes
    out += ["", "Data since the live model: " + (
        f"{dc.new} new, {dc.edited} edited, {dc.dropped} dropped, {dc.unchanged} unchanged examples."
        if dc else "no record of the live model's data (first evaluation, or live was not evaluated here).")]
    roles = [r for r in ROLES if r in report.models]
    out += ["", "## Probe answers", "", "| prompt | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for i, prompt in enumerate(report.probe_prompts):
        cells = []
        for r in roles:
            probes = report.models[r].probes
            if i >= len(probes):
                cells.append("")
                continue
            p = probes[i]
            tags = [t for t, on in (("LOOP", p.loop), ("INVENTED TURN", p.invented_turn), ("EMPTY", p.empty),
                                    ("CUT", p.cut)) if on]
            cells.append((f"[{', '.join(tags)}] " if tags else "") + _cell(p.text))
        out.append(f"| {_cell(prompt, 80)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
