"""The deploy gate: pure rules over an EvaluationReport, and the decisions kept under evaluation_dir.

A candidate is deployed only if every rule holds:

1. **faithful**: the served file's mean KLD against the trained model is within the bound for its
   quantization (``FORGE_GATE_KLD_BOUNDS``);
2. **template round trip**: every eval prompt tokenizes identically through the GGUF's embedded template and
   the training template, and the trained end-of-turn token ends generation in llama.cpp;
3. **no more broken answers**: probe answers that loop or invent turns are no more than the live model's
   (the base's for the first model) plus ``FORGE_GATE_PROBE_TOLERANCE``, or the excess is within sampling
   noise: a one-sided Fisher exact test (``excess_p``) gives it a chance of at least ``FORGE_GATE_PROBE_ALPHA``
   (0.1) if both models broke answers at the same rate (more than alpha to pass; with too few probes for any
   outcome to reach alpha, the literal rule). With 8 probes each: 0 -> 3, 0 -> 4 and 1 -> 5 broken answers
   are refused (p 0.10, 0.038, 0.059), 2 -> 3 and 1 -> 4 are not (p 0.50, 0.14), all 8 against none is (8e-5);
4. **little regurgitation**: the share of probe answers copying >= 50 characters of a training answer is at
   most ``FORGE_GATE_MAX_REGURGITATION_SHARE``;
5. **no worse**: eval loss at most the live model's times (1 + ``FORGE_GATE_LOSS_TOLERANCE``); the first
   model (no live one) must beat the base's eval loss, and so must a candidate whose live model has another
   vocabulary (a switched base model: its loss on the candidate's token ids would mean nothing);
6. **answers still follow their prompts**: the candidate's prompt gain (metrics.py) is at least
   ``FORGE_GATE_PROMPT_GAIN_RATIO`` (0.85) of the live model's, or the drop is within chance: a paired
   sign-flip permutation test over the eval conversations (``paired_drop_p``) gives it a chance of at least
   ``FORGE_GATE_PROMPT_GAIN_ALPHA`` (0.05). Every candidate is also held to ``FORGE_GATE_PROMPT_GAIN_BASE_RATIO``
   (0.6) of the base's gain, the only bar for the first model (and one whose live model has another
   vocabulary), and a floor every night against slides too small to see night to night: a fine-tune's gain is
   lower than the base's by nature, since it learns what all the answers have in common (good nights on the
   sample vault: 0.75-0.80 of the base's, p 0.08-0.15; the scrambled night 0.52, p 0.009;
   bench/results/quality.json, "prompt_gain_models").
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from forge_pipeline.config import ForgeSettings
from forge_pipeline.evaluation.report import EvaluationReport, GateDecision
from forge_pipeline.files import atomic_write_json, atomic_write_text

_DEFAULTS = {name: f.default for name, f in ForgeSettings.model_fields.items() if name.startswith("gate_")}


class GateThresholds(BaseModel):
    """The gate's thresholds; the defaults are ForgeSettings' (documented there, set as FORGE_GATE_*)."""

    kld_bounds: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULTS["gate_kld_bounds"]))
    loss_tolerance: float = _DEFAULTS["gate_loss_tolerance"]
    probe_tolerance: int = _DEFAULTS["gate_probe_tolerance"]
    probe_alpha: float = _DEFAULTS["gate_probe_alpha"]
    max_regurgitation_share: float = _DEFAULTS["gate_max_regurgitation_share"]
    prompt_gain_ratio: float = _DEFAULTS["gate_prompt_gain_ratio"]
    prompt_gain_alpha: float = _DEFAULTS["gate_prompt_gain_alpha"]
    prompt_gain_base_ratio: float = _DEFAULTS["gate_prompt_gain_base_ratio"]

    @classmethod
    def from_settings(cls, settings) -> GateThresholds:
        return cls(kld_bounds=settings.gate_kld_bounds, loss_tolerance=settings.gate_loss_tolerance,
                   probe_tolerance=settings.gate_probe_tolerance, probe_alpha=settings.gate_probe_alpha,
                   max_regurgitation_share=settings.gate_max_regurgitation_share,
                   prompt_gain_ratio=settings.gate_prompt_gain_ratio, prompt_gain_alpha=settings.gate_prompt_gain_alpha,
                   prompt_gain_base_ratio=settings.gate_prompt_gain_base_ratio)

    def kld_bound(self, quantization: str) -> float:
        # An unknown storage type gets the loosest bound rather than an arbitrary one.
        return self.kld_bounds.get(quantization, max(self.kld_bounds.values()))


def excess_p(cand_flagged: int, cand_n: int, ref_flagged: int, ref_n: int) -> float:
    """One-sided Fisher exact test: if the candidate and the reference broke answers at the same rate, the
    chance that at least ``cand_flagged`` of all the broken answers fell among the candidate's ``cand_n``
    (hypergeometric tail; exact with math.comb, no scipy needed for a 2x2 table)."""
    from math import comb

    n, k = cand_n + ref_n, cand_flagged + ref_flagged
    total = comb(n, cand_n)
    return sum(comb(k, x) * comb(n - k, cand_n - x) for x in range(cand_flagged, min(k, cand_n) + 1)) / total


def paired_drop_p(cand: list[float], ref: list[float], samples: int = 20_000) -> float:
    """One-sided paired sign-flip permutation test: if the candidate's and the reference's per-conversation
    values were exchangeable (each difference as likely negative as positive), the chance that the mean
    difference (candidate - reference) is at most the observed one. Exact over all 2^n sign patterns up to
    n = 16, else ``samples`` random patterns (seeded, so a decision is reproducible) with the observed one
    counted in. Chosen over a paired t-test because it assumes no normal distribution of 11-50 differences
    and needs no scipy."""
    d = np.asarray(cand, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    if d.size == 0:
        return 1.0
    at_most = d.sum() + 1e-9 * (1.0 + float(np.abs(d).sum()))  # ties (float sums of the same terms) count
    if d.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(((signs * d).sum(axis=1) <= at_most).mean())
    signs = np.random.default_rng(0).choice(np.array([-1.0, 1.0]), size=(samples, d.size))
    return float((((signs * d).sum(axis=1) <= at_most).sum() + 1) / (samples + 1))


def _within_noise(p: float, alpha: float, cand_n: int, ref_n: int) -> bool:
    """An excess of broken answers is noise when chance explains it with probability above ``alpha``, and the
    probe sets are large enough for any outcome to fall to alpha (all of the candidate's broken, none of the
    reference's); with fewer probes (2 against 2 never gets below 0.17) the literal rule applies."""
    return alpha > 0 and p > alpha and excess_p(cand_n, cand_n, 0, ref_n) <= alpha


def decide(report: EvaluationReport, thresholds: GateThresholds | None = None, against: str = "live") -> GateDecision:
    """Deploy or not, with one sentence per failed rule. ``against="base"`` applies the first-model rule."""
    t = thresholds or GateThresholds()
    cand = report.candidate
    ref = report.live if against == "live" and report.live is not None else report.base
    ref_name = "live" if ref is report.live and ref is not None else "base"
    failed, passed = [], []

    fid = report.fidelity
    if fid is None:
        failed.append("Fidelity was not measured, so the served file cannot be shown to match the trained model.")
    else:
        bound = t.kld_bound(fid.quantization)
        if fid.kld_mean <= bound:
            passed.append(f"faithful: KLD {fid.kld_mean:.4f} <= {bound} ({fid.quantization})")
        else:
            failed.append(f"The served {fid.quantization} file is not faithful to the trained model: mean KLD "
                          f"{fid.kld_mean:.4f} exceeds the {bound} bound (top-1 agreement {fid.top1_agreement:.1%}).")

    rt = report.round_trip
    if rt.ok:
        passed.append(f"template round trip exact on {rt.conversations} conversations")
    else:
        failed.append("The chat template does not round-trip: " + "; ".join(rt.problems or ["prompt tokens differ"]) + ".")

    if ref is None or not ref.probes:
        failed.append("No reference model answered the probes, so looping and invented turns cannot be compared.")
    elif cand.flagged <= ref.flagged + t.probe_tolerance:
        passed.append(f"probes: {cand.flagged} looping/invented vs {ref.flagged} for {ref_name}")
    elif _within_noise(p := excess_p(cand.flagged, len(cand.probes), ref.flagged, len(ref.probes)), t.probe_alpha,
                       len(cand.probes), len(ref.probes)):
        passed.append(f"probes: {cand.flagged} looping/invented vs {ref.flagged} for {ref_name}, within sampling "
                      f"noise (p {p:.2f} > {t.probe_alpha})")
    else:
        failed.append(f"The candidate loops or invents turns in {cand.flagged} of {len(cand.probes)} probe answers, "
                      f"more than the {ref_name} model's {ref.flagged} of {len(ref.probes)}"
                      # p named only where it decided: with too few probes the literal rule did
                      + (f" (p {p:.3f} by chance, at most {t.probe_alpha})." if 0 < p <= t.probe_alpha else "."))

    if cand.regurgitation_share <= t.max_regurgitation_share:
        passed.append(f"regurgitation {cand.regurgitation_share:.0%} <= {t.max_regurgitation_share:.0%}")
    else:
        failed.append(f"{cand.regurgitation_share:.0%} of probe answers copy 50+ characters verbatim from the "
                      f"training data (limit {t.max_regurgitation_share:.0%}; longest {cand.regurgitation_max_chars}).")

    c_loss, r_loss = cand.eval_loss, ref.eval_loss if ref is not None else None
    unscored = ref.not_scored if ref is not None and ref_name == "live" and r_loss is None else None
    if unscored and report.base is not None and report.base.eval_loss is not None and c_loss is not None:
        # The live model has another vocabulary (a switched base model): its loss is not comparable, so the
        # first-model rule applies against the base.
        b_loss = report.base.eval_loss
        if c_loss < b_loss:
            passed.append(f"eval loss {c_loss:.4f} beats the base's {b_loss:.4f} (the live model was not scored: "
                          f"{unscored})")
        else:
            failed.append(f"Eval loss {c_loss:.4f} does not beat the base model's {b_loss:.4f}, which it must since "
                          f"the live model cannot be compared ({unscored}).")
    elif c_loss is None or r_loss is None:
        failed.append(f"Eval loss is missing for the {'candidate' if c_loss is None else ref_name} model.")
    elif ref_name == "live":
        limit = r_loss * (1 + t.loss_tolerance)
        if c_loss <= limit:
            passed.append(f"eval loss {c_loss:.4f} vs live {r_loss:.4f} (limit {limit:.4f})")
        else:
            failed.append(f"Eval loss {c_loss:.4f} is worse than the live model's {r_loss:.4f} beyond the "
                          f"{t.loss_tolerance:.0%} tolerance.")
    elif c_loss < r_loss:
        passed.append(f"eval loss {c_loss:.4f} beats the base's {r_loss:.4f}")
    else:
        failed.append(f"Eval loss {c_loss:.4f} does not beat the base model's {r_loss:.4f}, which the first "
                      f"deployed model must.")

    # Against the live model when it was scored; against the base's lower bar always (the first model, a live
    # model of another vocabulary, and as a floor every night: compared only night to night, a slide of less
    # than the live bar's 15% a night would add up unseen). One sentence per failed rule: the floor is not
    # repeated when the live comparison already refused.
    live_refused = (ref_name == "live" and bool(ref.prompt_gains)
                    and not _prompt_gain_rule(cand, ref, "live", t.prompt_gain_ratio, t, passed, failed))
    if not live_refused:
        _prompt_gain_rule(cand, report.base, "base", t.prompt_gain_base_ratio, t, passed, failed)

    return GateDecision(deploy=not failed, reasons=failed, passed=passed, against=ref_name,
                        candidate_key=report.candidate_key,
                        decided_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _prompt_gain_rule(cand, ref, ref_name: str, min_ratio: float, t: GateThresholds, passed: list[str],
                      failed: list[str]) -> bool:
    """Rule 6: against the live model at ``prompt_gain_ratio``, or against the base at ``prompt_gain_base_ratio``
    (the module docstring says why the two bars differ). False when it refused."""
    if ref is None or min_ratio <= 0:
        return True  # no reference scored at all, or the rule turned off
    c, r = cand.prompt_gains, ref.prompt_gains
    why = (f"the {ref_name} model was not scored" if not r else "the candidate was not scored" if not c else
           f"{len(c)} against {len(r)} conversations" if len(c) != len(r) else
           "a gain is not a finite number" if not np.isfinite(np.concatenate([c, r])).all() else None)
    if why:  # e.g. a wrecked candidate (its loss rule refuses it)
        passed.append(f"prompt gain not compared: {why}")
        return True
    c_mean, r_mean = cand.prompt_gain, ref.prompt_gain
    if r_mean <= 0:  # e.g. a random-weight base: its prompts never helped
        passed.append(f"prompt gain {c_mean:.3f} (the {ref_name} model's {r_mean:.3f} leaves nothing to lose)")
        return True
    ratio, p = c_mean / r_mean, paired_drop_p(c, r)
    if ratio >= min_ratio or p >= t.prompt_gain_alpha:
        passed.append(f"prompt gain {c_mean:.3f} vs {ref_name} {r_mean:.3f} ({ratio:.0%}; p {p:.3f})")
        return True
    failed.append(f"The candidate's answers depend less on their prompts than the {ref_name} model's: a neutral "
                  f"prompt raises their loss by {c_mean:.3f} nats per token against the {ref_name} model's "
                  f"{r_mean:.3f} ({ratio:.0%}, below {min_ratio:.0%}; p {p:.3f} by chance), as when "
                  f"answers are trained under the wrong prompts.")
    return False


# ---- persistence ------------------------------------------------------------------------------------------

REPORT, DECISION, MARKDOWN, LATEST = "report.json", "decision.json", "report.md", "latest.json"


def save_evaluation(evaluation_dir: Path, report: EvaluationReport, decision: GateDecision,
                    markdown: str | None = None) -> Path:
    """Write evaluation_dir/<candidate_key>/{report.json, decision.json, report.md} and point latest.json at
    it, each atomically, so a restart (or a crash mid-write) finds either the old decision or the new one."""
    folder = Path(evaluation_dir) / report.candidate_key
    atomic_write_json(folder / REPORT, report.model_dump(mode="json"))
    if markdown is not None:
        atomic_write_text(folder / MARKDOWN, markdown)
    atomic_write_json(folder / DECISION, decision.model_dump(mode="json"))
    atomic_write_json(Path(evaluation_dir) / LATEST, {"candidate_key": report.candidate_key})
    return folder


def load_decision(evaluation_dir: Path, candidate_key: str) -> GateDecision | None:
    path = Path(evaluation_dir) / candidate_key / DECISION
    return GateDecision.model_validate_json(path.read_text()) if path.exists() else None


def load_report(evaluation_dir: Path, candidate_key: str) -> EvaluationReport | None:
    path = Path(evaluation_dir) / candidate_key / REPORT
    return EvaluationReport.model_validate_json(path.read_text()) if path.exists() else None


def latest_key(evaluation_dir: Path) -> str | None:
    path = Path(evaluation_dir) / LATEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["candidate_key"]
    except (ValueError, KeyError):
        return None


def history(evaluation_dir: Path) -> list[tuple[EvaluationReport, GateDecision]]:
    """Every stored evaluation with its decision, oldest first."""
    out = []
    for d in Path(evaluation_dir).glob(f"*/{DECISION}"):
        report = load_report(evaluation_dir, d.parent.name)
        if report is not None:
            out.append((report, GateDecision.model_validate_json(d.read_text())))
    return sorted(out, key=lambda rd: rd[0].created)
