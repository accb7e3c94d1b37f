"""The nightly evaluation's wall time per stage on this CPU, before and after a change, in ONE command
(side by side, alternating, so a loaded machine slows both alike) -> bench/results/evaluation_speed.json.

    python -m bench.evaluation_speed [--before REV] [--rounds N] [--work DIR] [--max-examples N]

Setup (cached under --work): the sample vault extracted and curated (its eval split), the embedded Gemma 3
270M (the CPU default base) as its f16 base GGUF, and two LoRA adapters (r16 on the 7 projections, as the CPU
default trains) with random weights: "live" and "candidate", each exported as an adapter GGUF, as the main
job ships them. Random weights cost the same to evaluate as trained ones; training is left out (its cost is
the training benchmark's). The trainer-side reference logits (evaluation/reference_logits.py) are written for
each adapter from its in-memory model, as the trainer does at the end of training; that time is reported.

Each round runs, for the code at REV ("before", exported with `git archive`) and the working tree ("after"):
night 1 (the first model: candidate = the "live" adapter, no live model, empty caches) and night 2 (the
"candidate" adapter against that live one, with the caches night 1 left: base probes and the live model's
probes are reused, as they are night after night). Each evaluation is a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "evaluation_speed.json"


def setup(work: Path, log) -> dict:
    from forge_pipeline.config import SAMPLE_VAULT, load_config
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.export.base_gguf import ensure_base_gguf
    from forge_pipeline.export.lora_gguf import write_adapter_gguf
    from forge_pipeline.extraction.extractor import extract_training_data
    from forge_pipeline.training.base_model import resolve_base_model
    from forge_pipeline.training.config import DEFAULT_TARGET_MODULES
    from forge_pipeline_tests.helpers import random_lora_adapter

    info_path = work / "setup.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    settings = load_config(home=work / "home", vault=SAMPLE_VAULT)
    extract_training_data(config=settings)
    curate(settings)
    base = resolve_base_model(None, settings.home_dir, cuda=False)
    info: dict = {"eval_path": str(settings.eval_path), "train_path": str(settings.curated_path), "adapters": {},
                  "reference_write_s": {}}
    # The CPU default's training config, recorded in each adapter's manifest as the trainer does: the
    # evaluation reads max_seq_length (256 on the CPU) from it.
    from forge_pipeline.training.config import resolve_training_config
    from forge_pipeline.training.data import load_training_data
    from forge_pipeline.training.publish import build_manifest

    cfg = resolve_training_config({}, "cpu")
    data = load_training_data(settings.curated_path, settings.eval_path, 1)
    info["max_seq_length"] = cfg.max_seq_length
    info["home"] = str(settings.home_dir)  # manifests store the base's path relative to it
    for seed, name in ((1, "live"), (2, "candidate")):
        adapter = work / f"adapter-{name}"
        model, tok = random_lora_adapter(base.path, adapter, seed, rank=16, b_scale=0.02,
                                         target_modules=tuple(DEFAULT_TARGET_MODULES))
        t = time.perf_counter()
        try:  # the trainer's end-of-training call (absent in older code)
            from forge_pipeline.evaluation.reference_logits import write_reference_logits

            write_reference_logits(model, tok, adapter, settings.eval_path, max_seq_length=cfg.max_seq_length)
            info["reference_write_s"][name] = round(time.perf_counter() - t, 2)
        except ImportError:
            pass
        del model
        build_manifest(fingerprint=f"bench-{name}", resumed=False, base=base, backend="transformers", cuda=False,
                       cfg=cfg, data=data, metrics={}, log_history=[], home=settings.home_dir).write(adapter)
        base_gguf = ensure_base_gguf(adapter, base.path, base.fingerprint, settings.base_models_dir, "f16", log=log)
        lora = write_adapter_gguf(adapter, base.path, work / f"{name}.gguf").path
        info["adapters"][name] = {"adapter_dir": str(adapter), "lora": str(lora)}
        info["base_gguf"] = str(base_gguf.path)
    from forge_pipeline.files import read_jsonl

    info["eval_examples"] = len(read_jsonl(settings.eval_path))
    info_path.write_text(json.dumps(info, indent=1))
    return info


def child(info: dict, night: int, cache_dir: Path, max_examples: int) -> dict:
    """One evaluation, as the main job runs it (this process is fresh)."""
    t0 = time.perf_counter()
    from forge_pipeline.evaluation.evaluate import evaluate_models
    from forge_pipeline.evaluation.gate import decide
    from forge_pipeline.evaluation.served import ServedModel

    import_s = time.perf_counter() - t0
    base = ServedModel(Path(info["base_gguf"]))
    name = "live" if night == 1 else "candidate"
    cand = ServedModel(Path(info["base_gguf"]), Path(info["adapters"][name]["lora"]))
    live = ServedModel(Path(info["base_gguf"]), Path(info["adapters"]["live"]["lora"])) if night == 2 else None
    t = time.perf_counter()
    report = evaluate_models(cand, base, adapter_dir=Path(info["adapters"][name]["adapter_dir"]),
                             eval_path=Path(info["eval_path"]), train_path=Path(info["train_path"]), live=live,
                             max_examples=max_examples, cache_dir=cache_dir, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - t
    d = decide(report, against="live" if live else "base")
    return {"night": night, "import_s": round(import_s, 2), "evaluate_s": round(wall, 2), "timings": report.timings,
            "eval_loss": {r: m.eval_loss for r, m in report.models.items()},
            "kld": report.fidelity and report.fidelity.kld_mean, "top1": report.fidelity and report.fidelity.top1_agreement,
            "fidelity_source": getattr(report.fidelity, "reference", None),
            "probes_cached": {r: m.probes_cached for r, m in report.models.items()},
            "probe_tokens": {r: sum(p.completion_tokens for p in m.probes) for r, m in report.models.items()},
            "loops": {r: m.count("loop") for r, m in report.models.items()}, "deploy": d.deploy}


def source_tree(rev: str, work: Path) -> Path:
    """forge_pipeline and serving as of ``rev``, plus this script, in a folder of their own."""
    out = work / f"src-{rev}"
    if not out.exists():
        tmp = work / f"src-{rev}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev, "forge_pipeline", "serving"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        (tmp / "src.tar").write_bytes(archive)
        with tarfile.open(tmp / "src.tar") as tar:
            tar.extractall(tmp, filter="data")
        (tmp / "src.tar").unlink()
        os.replace(tmp, out)
    (out / "bench").mkdir(exist_ok=True)
    (out / "bench" / "__init__.py").write_text("")
    shutil.copy2(__file__, out / "bench" / "evaluation_speed.py")
    return out


def run_child(src: Path, work: Path, info: dict, night: int, cache_dir: Path, max_examples: int) -> dict:
    cmd = [sys.executable, "-m", "bench.evaluation_speed", "--child", str(night), "--work", str(work),
           "--cache", str(cache_dir), "--max-examples", str(max_examples)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(src),
                                                                           "FORGE_HOME": info["home"]})
    if proc.returncode != 0:
        return {"night": night, "error": proc.stderr.strip().splitlines()[-5:]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=None, help="git revision to compare with (default: none)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/forge-eval-speed"))
    ap.add_argument("--max-examples", type=int, default=32)
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    a = ap.parse_args()
    if a.child is not None:
        info = json.loads((a.work / "setup.json").read_text())
        print(json.dumps(child(info, a.child, a.cache, a.max_examples)), flush=True)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    info = setup(a.work, lambda m: print(m, file=sys.stderr))
    versions = {"after": REPO} | ({"before": source_tree(a.before, a.work)} if a.before else {})
    runs = []
    for r in range(a.rounds):
        for label, src in sorted(versions.items(), reverse=r % 2 == 1):  # alternate who goes first
            cache = a.work / f"cache-{label}-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            for night in (1, 2):
                row = {"version": label, "round": r, **run_child(src, a.work, info, night, cache, a.max_examples)}
                print(json.dumps(row), flush=True)
                runs.append(row)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "head": git, "before": a.before,
              "machine": f"{os.cpu_count()} CPU cores, shared with other work (load average "
                         f"{os.getloadavg()[0]:.1f} at the end); before and after ran in this one command, alternating",
              "model": "embedded Gemma 3 270M, f16 base GGUF + LoRA adapter GGUF (r16, 7 projections)",
              "eval_examples": min(info["eval_examples"], a.max_examples),
              "reference_write_s": info.get("reference_write_s"), "runs": runs}
    from forge_pipeline.files import atomic_write_json

    atomic_write_json(RESULTS, result)
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
