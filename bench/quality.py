"""The nightly quality loop on the sample vault, CPU default (Gemma 3 270M) -> bench/results/quality.json.

    python -m bench.quality nights     # three nights (vault up to Aug 31 / Sep 30 / Oct 31) + two bad nights,
                                       # then the probe set under several sampling settings
    python -m bench.quality steps [24 48 96 192]   # held-out eval loss and loop rate vs CPU training steps
    python -m bench.quality regate     # today's evaluation and gate over the models `nights` left (minutes)
    python -m bench.quality gains      # the prompt gain of every model `nights` left, and the rule's power

Each night runs the real pipeline functions: extract + curate the vault as it stood that day, train with the
CPU defaults, export (what serving would receive), evaluate base / live / candidate as served, decide, and
"deploy" (the candidate becomes live) when the gate passes. Two bad nights train on the last night's data:
one with every answer moved to another example's prompt (it learns nothing true), one with a learning rate
100x the default (it is wrecked); the gate should refuse both.
Each section is merged into the JSON file, so the sections can run separately. CPU-heavy: run once, late.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
NIGHTS = ("2026-08-31", "2026-09-30", "2026-10-31")
SAMPLINGS = [dict(temperature=0.7, repeat_penalty=1.0), dict(temperature=0.7, repeat_penalty=1.1),
             dict(temperature=0.3, repeat_penalty=1.1), dict(temperature=0.7, repeat_penalty=1.3),
             dict(temperature=1.0, repeat_penalty=1.1), dict(temperature=0.3, repeat_penalty=1.3)]
DATED = re.compile(r"(\d{4}-\d{2}-\d{2})")


def vault_as_of(src: Path, dst: Path, day: str) -> Path:
    """A copy of the vault holding only the notes whose file name dates them on or before ``day``."""
    shutil.rmtree(dst, ignore_errors=True)

    def ignore(folder, names):
        return [n for n in names if (m := DATED.search(n)) and m.group(1) > day]

    shutil.copytree(src, dst, ignore=ignore)
    return dst


def write_merged(section: str, value) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[section] = value
    from forge_pipeline.files import atomic_write_json

    atomic_write_json(RESULTS, data)


def summary(report, decision, eval_s: float) -> dict:
    c, live, base = report.candidate, report.live, report.base
    return {
        "eval_loss": {"base": base.eval_loss, "live": live and live.eval_loss, "candidate": c.eval_loss},
        "kld": report.fidelity and report.fidelity.kld_mean, "top1": report.fidelity and report.fidelity.top1_agreement,
        "quantization": report.fidelity and report.fidelity.quantization,
        "probe_loop_rate": {m.role: m.loop_rate for m in report.models.values()},
        "probe_invented_turns": {m.role: m.count("invented_turn") for m in report.models.values()},
        "probe_cut_at_limit": {m.role: m.count("cut") for m in report.models.values()},
        "regurgitation_share": c.regurgitation_share, "regurgitation_max_chars": c.regurgitation_max_chars,
        "drift_kld": c.drift_kld, "prompt_gain": {m.role: m.prompt_gain for m in report.models.values()},
        "round_trip": report.round_trip.ok, "deploy": decision.deploy,
        "reasons": decision.reasons, "eval_examples": report.eval_examples, "evaluation_wall_s": round(eval_s, 1),
        "evaluation_timings": report.timings,
        "candidate_answers": {p.prompt: p.text[:300] for p in c.probes[:3]},
    }


def night(settings, vault: Path, overrides: dict, live, log, scramble: bool = False, run_dir: str = "run"):
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.evaluation.gate import GateThresholds, decide, save_evaluation
    from forge_pipeline.evaluation.nightly import markdown
    from forge_pipeline.evaluation.run import Candidate, evaluate_models_from_settings
    from forge_pipeline.evaluation.served import ServedModel
    from forge_pipeline.export.pipeline import export_model
    from forge_pipeline.extraction.extractor import extract_training_data
    from forge_pipeline.files import read_jsonl, write_jsonl
    from forge_pipeline.training.config import resolve_training_config
    from forge_pipeline.training.trainer import run_training

    t0 = time.perf_counter()
    settings = settings.model_copy(update={"vault": vault})
    extract_training_data(config=settings)
    curate(settings)
    train_path = settings.curated_path
    if scramble:  # every answer moved to another example's prompt
        rows = read_jsonl(train_path)
        answers = [r["messages"][-1]["content"] for r in rows]
        random.Random(0).shuffle(answers)
        for r, a in zip(rows, answers):
            r["messages"][-1]["content"] = a
        train_path = settings.training_data_dir / "scrambled.jsonl"
        write_jsonl(train_path, rows)
    t_data = time.perf_counter()
    cfg = resolve_training_config(overrides, "cpu")
    out = settings.training_dir / ("bad" if scramble else run_dir)
    tr = run_training(train_path, out, cfg, eval_path=settings.eval_path, home=settings.home_dir, log=log, force_cpu=True)
    t_train = time.perf_counter()
    ex = export_model(Path(tr.final_dir), settings.models_dir, eval_path=settings.eval_path, home=settings.home_dir,
                      base_models_dir=settings.base_models_dir, serving_dir=settings.serving_dir, validate=False, log=log)
    t_export = time.perf_counter()
    if ex.kind == "adapter":
        cand = Candidate(ServedModel(Path(ex.base_gguf), Path(ex.gguf_path)), ServedModel(Path(ex.base_gguf)),
                         Path(tr.final_dir), ex.version)
    else:
        from forge_pipeline.evaluation.run import base_gguf_for

        cand = Candidate(ServedModel(Path(ex.gguf_path)), ServedModel(base_gguf_for(Path(tr.final_dir), settings, log)),
                         Path(tr.final_dir), ex.version)
    report = evaluate_models_from_settings(settings, cand, live, None, log)
    decision = decide(report, GateThresholds.from_settings(settings))
    folder = settings.evaluation_dir / report.candidate_key
    folder.mkdir(parents=True, exist_ok=True)
    save_evaluation(settings.evaluation_dir, report, decision, markdown(report, decision, folder))
    t_eval = time.perf_counter()
    s = summary(report, decision, t_eval - t_export)
    s.update(train_examples=len(read_jsonl(settings.curated_path)), export_kind=ex.kind, steps=tr.metrics.get("global_step"),
             wall_s={"data": round(t_data - t0, 1), "train": round(t_train - t_data, 1),
                     "export": round(t_export - t_train, 1), "evaluate": round(t_eval - t_export, 1)})
    return s, cand, report


def run_nights(home: Path) -> None:
    from forge_pipeline.config import SAMPLE_VAULT, load_config
    from forge_pipeline.evaluation.served import LoadedModel, Sampling

    settings = load_config(home=home)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    live, nights = None, []
    for day in NIGHTS:
        s, cand, report = night(settings, vault_as_of(SAMPLE_VAULT, home / "vault", day), {}, live, log)
        s["night"] = day
        nights.append(s)
        print(json.dumps({k: s[k] for k in ("night", "eval_loss", "kld", "deploy", "reasons", "evaluation_wall_s")}), flush=True)
        if s["deploy"]:
            live = cand.model
        write_merged("nights", nights)
    # Two bad nights on the last night's data, each against the live model: a learning rate 100x the default
    # (the model is wrecked), then (after the sampling grid: it is the long one) answers scrambled across
    # prompts (nothing true to learn).
    def bad(label, overrides, **kw):
        s, _, _ = night(settings, home / "vault", overrides, live, log, **kw)
        s["night"] = f"{NIGHTS[-1]} (bad: {label})"
        nights.append(s)
        write_merged("nights", nights)
        print(json.dumps({k: s[k] for k in ("night", "eval_loss", "deploy", "reasons")}), flush=True)

    bad("learning rate 0.02, 100x the default", {"learning_rate": 0.02}, run_dir="bad-lr")

    # Serving's default sampling, measured: the probe set answered by the live model under each setting.
    from forge_pipeline.evaluation import metrics
    from forge_pipeline.evaluation.probes import DEFAULT_PROBES

    rows = []
    with LoadedModel(live or cand.model, 2048) as m:
        for variant in SAMPLINGS:
            for seed in (0, 100):  # the 8 probes answered together (answer_many), as the evaluation does
                sampling = Sampling(**variant, max_tokens=256, seed=seed)
                t = time.perf_counter()
                answers = m.answer_many(list(DEFAULT_PROBES), sampling)
                rows.append({**variant, "seed": seed, "max_tokens": 256, "wall_s": round(time.perf_counter() - t, 1),
                             "loops": sum(bool(metrics.loop_reason(a.text)) for a in answers),
                             "invented_turns": sum(bool(metrics.invented_turn(a.text)) for a in answers),
                             "cut_at_limit": sum(a.finish_reason == "length" for a in answers),
                             "empty": sum(not a.text.strip() for a in answers),
                             "mean_tokens": round(sum(a.completion_tokens for a in answers) / len(answers), 1)})
                print(json.dumps(rows[-1]), flush=True)
    write_merged("sampling", {"probes": len(DEFAULT_PROBES), "model": "live after the three nights", "runs": rows})
    bad("answers scrambled across prompts", {}, scramble=True)


def run_regate(home: Path) -> None:
    """The current evaluation and gate over the models the last `nights` run left in ``home``, on night 3's
    eval split: night 3 against night 2 as the live model (a good night), and the scrambled night against
    night 3 (the night the gate used to pass); then both again as a *first* model (no live one, so rule 6
    holds them to the base). Only these two candidates still have their adapter folders (training/run holds
    the last good night's, training/bad the scrambled one's)."""
    from forge_pipeline.config import load_config
    from forge_pipeline.evaluation.gate import GateThresholds, decide, paired_drop_p
    from forge_pipeline.evaluation.run import Candidate, evaluate_models_from_settings
    from forge_pipeline.evaluation.served import ServedModel

    settings = load_config(home=home).model_copy(update={"vault": home / "vault"})
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    exports = sorted(p for p in settings.models_dir.iterdir() if p.is_dir())  # in the order `nights` made them
    if len(exports) != 5:
        sys.exit(f"{settings.models_dir}: expected the 5 exports of one `nights` run, found {len(exports)}")
    base = ServedModel(next(settings.base_models_dir.glob("gguf/*/base-*.gguf")))
    served = {name: ServedModel(base.gguf, next(exports[i].glob("adapter-*.gguf")))
              for name, i in (("night 2", 1), ("night 3", 2), ("scrambled", 4))}
    rows = []
    for cand, live, adapter_dir in (("night 3", "night 2", "run"), ("scrambled", "night 3", "bad"),
                                    ("night 3", None, "run"), ("scrambled", None, "bad")):
        t = time.perf_counter()
        report = evaluate_models_from_settings(
            settings, Candidate(served[cand], base, settings.training_dir / adapter_dir / "final"),
            served[live] if live else None, None, log)
        wall = time.perf_counter() - t
        decision = decide(report, GateThresholds.from_settings(settings))
        c, ref = report.candidate, report.live or report.base
        rows.append({"candidate": cand, "live": live, "against": decision.against,
                     "eval_loss": {m.role: m.eval_loss for m in report.models.values()},
                     "prompt_gain": {m.role: m.prompt_gain for m in report.models.values()},
                     "prompt_gain_ratio": c.prompt_gain / ref.prompt_gain,
                     "paired_drop_p": paired_drop_p(c.prompt_gains, ref.prompt_gains),
                     "prompt_gains": {m.role: [round(g, 4) for g in m.prompt_gains or []] for m in report.models.values()},
                     "deploy": decision.deploy, "reasons": decision.reasons, "evaluation_wall_s": round(wall, 1),
                     "candidate_prompt_gain_s": report.timings.get("candidate_prompt_gain_s")})
        print(json.dumps({k: rows[-1][k] for k in ("candidate", "live", "against", "eval_loss", "prompt_gain", "prompt_gain_ratio",
                                                   "paired_drop_p", "deploy", "reasons")}), flush=True)
    write_merged("prompt_gain", {"what": "today's evaluation and gate over the models of the `nights` run above, on "
                                 "night 3's eval split (11 conversations); neutral prompt: metrics.NEUTRAL_PROMPT; "
                                 "live null: judged as the first model, against the base",
                                 "runs": rows})


def run_gains(home: Path) -> None:
    """The prompt gain (metrics.py) of the base and of every model the last `nights` run exported, on night 3's
    eval split, scored directly (no adapter folder needed, unlike `regate`): night 1 against the base is the
    comparison rule 6 leaves out. Then the rule's power on 11 conversations, simulated: a candidate at a given
    fraction of the live model's measured gains, plus per-conversation noise with the spread measured between
    two good nights (night 3 - night 2), refused how often by the gate's rule (ratio below
    gate_prompt_gain_ratio and paired_drop_p below gate_prompt_gain_alpha)."""
    import numpy as np

    from forge_pipeline.config import load_config
    from forge_pipeline.evaluation import metrics
    from forge_pipeline.evaluation.gate import GateThresholds, paired_drop_p
    from forge_pipeline.evaluation.reference import ReferenceModel, neutral_prompt_sequences, training_sequences
    from forge_pipeline.evaluation.served import OneModelAtATime, ServedModel
    from forge_pipeline.files import read_jsonl

    settings = load_config(home=home)
    exports = sorted(p for p in settings.models_dir.iterdir() if p.is_dir())  # in the order `nights` made them
    if len(exports) != 5:
        sys.exit(f"{settings.models_dir}: expected the 5 exports of one `nights` run, found {len(exports)}")
    base = next(settings.base_models_dir.glob("gguf/*/base-*.gguf"))
    rows = read_jsonl(settings.eval_path)
    tok = ReferenceModel(settings.training_dir / "run" / "final").tokenizer
    seqs, neutral = training_sequences(tok, rows, 1024), neutral_prompt_sequences(tok, rows, 1024)

    def score(m, s):
        return None if s is None else (float(metrics.token_nll(m.logits(s[0], s[1] - 1), s[0], s[1], rows_from=s[1] - 1).sum()),
                                       len(s[0]) - s[1])

    gains, models = {}, OneModelAtATime(2048, None)
    try:
        for name, lora in [("base", None), ("night 1", 0), ("night 2", 1), ("night 3", 2), ("scrambled", 4)]:
            m = models.get(ServedModel(base, None if lora is None else next(exports[lora].glob("adapter-*.gguf"))))
            gains[name] = metrics.prompt_gains([score(m, s) for s in seqs], [score(m, s) for s in neutral])
            print(json.dumps({"model": name, "prompt_gain": float(np.mean(gains[name]))}), flush=True)
    finally:
        models.close()
    pairs = [("night 1", "base"), ("night 2", "night 1"), ("night 3", "night 2"), ("scrambled", "night 3"),
             ("scrambled", "night 2"), ("scrambled", "base"), ("night 2", "base"), ("night 3", "base")]
    compared = [{"candidate": c, "against": r, "ratio": float(np.mean(gains[c]) / np.mean(gains[r])),
                 "paired_drop_p": paired_drop_p(gains[c], gains[r])} for c, r in pairs]
    t = GateThresholds()
    live = np.array(gains["night 3"])
    sd = float(np.std(np.array(gains["night 3"]) - np.array(gains["night 2"]), ddof=1))
    rng, power = np.random.default_rng(0), []
    for frac in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.67, 0.5):
        refused = 0
        for _ in range(2000):
            cand = frac * live + rng.normal(0, sd, live.size)
            refused += bool(cand.mean() / live.mean() < t.prompt_gain_ratio
                            and paired_drop_p(list(cand), list(live)) < t.prompt_gain_alpha)
        power.append({"fraction_of_live": frac, "refused_share": refused / 2000})
    write_merged("prompt_gain_models", {
        "what": "prompt gain of each model of the `nights` run on night 3's eval split (11 conversations), scored "
                "directly; pairs as the gate would compare them (against the live model at gate_prompt_gain_ratio, "
                "against the base at gate_prompt_gain_base_ratio: the first model's only bar, a floor every night)",
        "mean_gain": {k: float(np.mean(v)) for k, v in gains.items()}, "per_conversation": gains,
        "compared": compared,
        "power_simulated": {"what": "a candidate at fraction x of night 3's gains + N(0, sd) per conversation, "
                                    "sd measured between nights 2 and 3; 2000 draws each, the gate's default rule",
                            "sd": sd, "runs": power}})
    for row in compared + power:
        print(json.dumps(row), flush=True)


def run_steps(home: Path, steps: list[int]) -> None:
    from forge_pipeline.config import SAMPLE_VAULT, load_config

    settings = load_config(home=home)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    curve = []
    for n in steps:
        t = time.perf_counter()
        s, _, _ = night(settings.model_copy(update={"home": home / f"steps-{n}"}), SAMPLE_VAULT,
                        {"max_steps": n, "eval_steps": n, "save_steps": n}, None, log)
        curve.append({"max_steps": n, "eval_loss": s["eval_loss"]["candidate"], "base_eval_loss": s["eval_loss"]["base"],
                      "probe_loop_rate": s["probe_loop_rate"]["candidate"],
                      "probe_invented_turns": s["probe_invented_turns"]["candidate"],
                      "probe_cut_at_limit": s["probe_cut_at_limit"]["candidate"], "train_s": s["wall_s"]["train"],
                      "total_s": round(time.perf_counter() - t, 1)})
        print(json.dumps(curve[-1]), flush=True)
        write_merged("steps", curve)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "nights"
    home = Path("/tmp/forge-quality-bench")
    if what == "nights":
        run_nights(home / "nights")
    elif what == "gains":
        run_gains(home / "nights")
    elif what == "regate":
        run_regate(home / "nights")
    elif what == "steps":
        run_steps(home, [int(a) for a in sys.argv[2:]] or [24, 48, 96, 192])
    else:
        sys.exit(__doc__)
