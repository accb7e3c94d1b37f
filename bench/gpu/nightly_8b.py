"""The adapter-native nightly on the H100, in one command: curated JSONL -> LoRA adapter -> adapter GGUF ->
evaluation -> swapped into a running server that keeps the 8B base resident. Each stage is timed, and the bare
unsloth peer runs in the same command (bench/results/gpu_nightly_h100.json).

    python -m bench.gpu.nightly_8b prepare MODEL_DIR WORK     # random Llama-3.1-8B, SentencePiece tokenizer, data
    python -m bench.gpu.nightly_8b base MODEL_DIR WORK        # night 0: a short run whose export builds the base GGUF once
    python -m bench.gpu.nightly_8b run MODEL_DIR WORK OUT     # serving on the base, then the timed nightly process
    python -m bench.gpu.nightly_8b nightly MODEL_DIR WORK     # (the timed process itself; `run` starts it)
    python -m bench.gpu.nightly_8b validate MODEL_DIR WORK    # the export validation the nightly leaves out
    python -m bench.gpu.nightly_8b quants MODEL_DIR WORK      # fidelity of the newest adapter on q8_0 and q4_k_m bases

The nightly process is a fresh interpreter, so its imports (unsloth, transformers, trl: ~31-36 s measured on
this card) count, as they do at 03:00. The data is 500 reflection-length examples (100-400 tokens) x 3
epochs with the seed's hyperparameters (r16/alpha32 on 7 projections, lr 2e-4, batch 4 x 4) and the
project's default batch layout for such data. llama-cpp-python must be built with the system compiler (see
export_8b.py) and, for evaluation and serving on the GPU, with -DGGML_CUDA=on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

T_LAUNCH = float(os.environ.get("BENCH_T_LAUNCH", time.time()))  # the parent's clock at our launch
# unsloth on the H100; `transformers` lets the same script be dry-run on a CPU with a tiny model.
BACKEND = os.environ.get("BENCH_BACKEND", "unsloth")
DEVICE = "cuda" if BACKEND == "unsloth" else "cpu"


def _import_unsloth() -> None:
    if BACKEND == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as in production)


def prepare(model_dir: Path, work: Path) -> dict:
    from bench.gpu.export_8b import use_sentencepiece_tokenizer, zero_turn_rows
    from bench.gpu.train_shape import make_data

    t = time.time()
    if not (model_dir / "config.json").exists():
        bare = Path(os.environ.get("FORGE_BARE_BENCH", ".device/bare_unsloth_bench.py"))
        subprocess.run([sys.executable, str(bare), "make", str(model_dir)], check=True)
    use_sentencepiece_tokenizer(model_dir)
    zeroed = zero_turn_rows(model_dir)
    work.mkdir(parents=True, exist_ok=True)
    # nights 0-3: the timed nightlies find their data made (it was made inside the timed process before)
    for seed in [int(x) for x in os.environ.get("BENCH_PREPARE_SEEDS", "0 1 2 3").split()]:
        make_data(work / f"train-{seed}.jsonl", str(model_dir), 500, (100, 400), seed=seed)
    make_data(work / "eval.jsonl", str(model_dir), 50, (100, 400), seed=99)
    # The nightly's eval split: the vault grew since night 0, so 5 of its 50 conversations are new.
    make_data(work / "eval-new.jsonl", str(model_dir), 5, (100, 400), seed=98)
    rows = (work / "eval.jsonl").read_text().splitlines()[5:]
    new = [r.replace('"id": "0000', '"id": "new0', 1) for r in (work / "eval-new.jsonl").read_text().splitlines()]
    (work / "eval-1.jsonl").write_text("\n".join(rows + new) + "\n")
    return {"stage": "prepare", "s": round(time.time() - t, 1), "zeroed_turn_rows": zeroed}


def _eval_split(data_seed: int) -> str:
    return "eval.jsonl" if data_seed == 0 else "eval-1.jsonl"


def _night(model_dir: Path, work: Path, data_seed: int, max_steps: int, stages: dict) -> tuple:
    """Train on this night's data, then export the adapter GGUF through the project's export_model (which
    builds the base GGUF on the first night only, cached under FORGE_HOME/base_models)."""
    from bench.gpu.train_shape import make_data
    from forge_pipeline.export.pipeline import export_model
    from forge_pipeline.training.config import resolve_training_config
    from forge_pipeline.training.trainer import run_training

    home = work / "home"
    data = work / f"train-{data_seed}.jsonl"
    if not data.exists():  # a later night: the vault grew, so the data differs and training really runs
        make_data(data, str(model_dir), 500, (100, 400), seed=data_seed)
    overrides = {"base_model": str(model_dir), "backend": BACKEND, "min_examples": 1, "max_steps": max_steps}
    if os.environ.get("BENCH_SKIP"):  # checkpoint_skip_layers (default: TrainingConfig's, auto)
        overrides["checkpoint_skip_layers"] = os.environ["BENCH_SKIP"]
    if BACKEND != "unsloth":  # the CPU dry run: a few short steps
        overrides.update(max_steps=2, max_seq_length=128)
    cfg = resolve_training_config(overrides, DEVICE)
    t = time.time()
    report = run_training(data, home / "training", cfg, eval_path=work / _eval_split(data_seed), home=home,
                          log=lambda m: print(m, file=sys.stderr))
    stages["training_total_s"] = round(time.time() - t, 2)
    stages["load_s"], stages["train_s"] = report.metrics.get("load_s"), report.metrics.get("train_s")
    # the rest of training_total_s, by phase (absent from reports of older code)
    stages["training_phases_s"] = {k: report.metrics.get(k) for k in (
        "layout_s", "setup_s", "base_eval_s", "final_eval_s", "publish_s", "reference_logits_s")}
    if os.environ.get("BENCH_NO_EXPORT") == "1":  # training alone (a device lease too short for the base GGUF)
        return report, None, data
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if os.environ.get("BENCH_WAIT_BUILD"):  # night 0 trained while llama-cpp-python built (device_nightly.sh setup0)
        stages["waited_for_build_s"] = _wait_for_build(Path(os.environ["BENCH_WAIT_BUILD"]))
    t = time.time()
    exp = export_model(report.final_dir, home / "models", quant=os.environ.get("BENCH_QUANT", "q4_k_m"), validate=False, home=home,
                       log=lambda m: print(m, file=sys.stderr))
    stages["adapter_export_s"] = round(time.time() - t, 2)
    stages["export_timings"] = exp.timings
    return report, exp, data


def _wait_for_build(done: Path, deadline_s: float = 900) -> float:
    """Wait for the llama-cpp-python build's record (device_nightly.sh writes it when pip returns), fail on a failed
    build or after ``deadline_s`` (the build took 222-299 s on the H100 machines), and let imports see the package
    that appeared on the path after this process started: Python caches a path entry that did not exist as
    "nothing here" until the import caches are invalidated."""
    import importlib

    t = time.time()
    while True:
        try:
            build = json.loads(done.read_text())
            break
        except (FileNotFoundError, json.JSONDecodeError):
            if time.time() - t > deadline_s:
                raise SystemExit(f"no llama-cpp-python build record at {done} after {deadline_s:.0f} s") from None
            time.sleep(1)
    if build.get("rc") != 0:
        raise SystemExit(f"llama-cpp-python's build failed ({done}: {build})")
    importlib.invalidate_caches()
    return round(time.time() - t, 1)


def _evaluate(report, exp, work: Path, data: Path, eval_split: str, stages: dict):
    """The evaluation step as the nightly job runs it: candidate vs base, with the evaluation folder kept
    between nights (FORGE_HOME/evaluation: cached base probe answers and per-example losses, as a person's
    install has them after its first night)."""
    from forge_pipeline.evaluation.evaluate import evaluate_models
    from forge_pipeline.evaluation.gate import decide
    from forge_pipeline.evaluation.served import ServedModel

    adapter_path, base_gguf = Path(exp.gguf_path), Path(exp.base_gguf)
    t = time.time()
    ev = evaluate_models(ServedModel(base_gguf, adapter_path), ServedModel(base_gguf, None),
                         adapter_dir=Path(report.final_dir), eval_path=work / eval_split, train_path=data,
                         max_examples=50, cache_dir=work / "home" / "evaluation", log=lambda m: print(m, file=sys.stderr))
    stages["evaluation_s"] = round(time.time() - t, 2)
    return ev, decide(ev, against="base")


def base(model_dir: Path, work: Path) -> dict:
    """Night 0: a short training whose export builds the resident base q4_k_m GGUF (once per base model), then
    its evaluation (so the nightly finds what a second night finds: the base's probe answers already made)."""
    stages: dict = {}
    t = time.time()
    _import_unsloth()
    stages["imports_s"] = round(time.time() - t, 2)
    report, exp, data = _night(model_dir, work, data_seed=0, max_steps=2, stages=stages)
    ev, _ = _evaluate(report, exp, work, data, _eval_split(0), stages)
    return {"stage": "night0_builds_base_gguf", **stages, "base_gguf": exp.base_gguf,
            "evaluation_timings": getattr(ev, "timings", None), "fidelity": _fidelity(ev),
            "seeded_turn_tokens": _seeded(report), "base_gguf_turn_rows": _turn_rows(Path(exp.base_gguf))}


def _fidelity(ev) -> dict:
    f = ev.fidelity
    return {"kld_mean": f.kld_mean, "kld_p99": f.kld_p99, "top1_agreement": f.top1_agreement,
            "quantization": f.quantization, "reference": f.reference, "round_trip_ok": ev.round_trip.ok}


def _seeded(report) -> dict:
    return json.loads(Path(report.manifest_path).read_text())["base_model"].get("seeded_turn_tokens", {})


def _turn_rows(gguf_path: Path) -> dict:
    """In the quantized base GGUF, read back here: is <|eot_id|>'s row EOS's (same quantized bytes), and are the
    header rows no longer zero? (export/turn_rows.py seeded the f16 file before quantizing.)"""
    import numpy as np
    from gguf import GGUFReader

    from bench.gpu.export_8b import LLAMA3_TURN_TOKENS

    r = GGUFReader(str(gguf_path))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    eos = int(r.fields["tokenizer.ggml.eos_token_id"].contents())
    ids = {t: tokens.index(t) for t in LLAMA3_TURN_TOKENS if t in tokens}
    out = {"ids": ids, "eos": eos}
    for t in r.tensors:
        if t.name in ("token_embd.weight", "output.weight") and "<|eot_id|>" in ids:
            d = np.asarray(t.data)
            out[t.name] = {"type": t.tensor_type.name,
                           "eot_row_equals_eos_row": bool(np.array_equal(d[ids["<|eot_id|>"]], d[eos])),
                           "header_rows_nonzero": [bool(np.any(d[ids[h]] != 0)) for h in LLAMA3_TURN_TOKENS[:2]]}
    return out


def nightly(model_dir: Path, work: Path) -> dict:
    """The timed nightly, as the scheduled job runs it: train -> adapter GGUF -> evaluate -> swap."""
    stages = {"process_start_s": round(time.time() - T_LAUNCH, 2)}
    t = time.time()
    _import_unsloth()
    stages["imports_s"] = round(time.time() - t, 2)
    # BENCH_DATA_SEED: another night's data (a second timed nightly trains again instead of reusing the adapter)
    seed = int(os.environ.get("BENCH_DATA_SEED", "1"))
    report, exp, data = _night(model_dir, work, data_seed=seed, max_steps=-1, stages=stages)
    ev, decision = _evaluate(report, exp, work, data, _eval_split(seed), stages)
    adapter_path = Path(exp.gguf_path)
    import httpx

    t = time.time()
    # a first night (BENCH_FIRST_NIGHT=1: no night 0 ran, serving started without a model) loads the base too
    body = {"model_path": str(adapter_path)} | ({"base_path": exp.base_gguf} if os.environ.get("BENCH_FIRST_NIGHT") == "1" else {})
    r = httpx.post(os.environ["BENCH_SERVING"] + "/admin/reload-model", json=body, timeout=600)
    stages["swap_s"] = round(time.time() - t, 2)
    stages["swap_status"] = r.status_code
    stages["total_s"] = round(time.time() - T_LAUNCH, 2)
    m = report.metrics
    return {"stage": "nightly", "data_seed": seed, **stages, "adapter_size_mb": exp.size_mb, "training_status": report.status,
            "global_step": m.get("global_step"), "train_loss": m.get("train_loss"), "eval_loss": m.get("eval_loss"),
            "tokens_seen": m.get("tokens_seen"), "steady_tokens_per_s": m.get("steady_tokens_per_s"),
            "uncheckpointed_layers": m.get("uncheckpointed_layers"),
            "batch_layout": m.get("batch_layout"), "batch_size_used": m.get("batch_size_used"),
            "gradient_accumulation_used": m.get("gradient_accumulation_used"), "peak_memory_gib": m.get("peak_memory_gib"),
            "evaluation_timings": getattr(ev, "timings", None), "fidelity": _fidelity(ev),
            "seeded_turn_tokens": _seeded(report), "gate_deploy": decision.deploy,
            "gate_reasons": decision.reasons,
            "swap_response": r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text[:300]}


def validate(model_dir: Path, work: Path) -> dict:
    """The export validation the Dagster job runs and the timed nightly leaves out (export_model(validate=False)):
    the newest adapter export loaded and answered in a child llama.cpp process, and its perplexity against the
    Hugging Face base + adapter on the eval split. Timed on its own, so the job's extra cost is known."""
    t = time.time()
    _import_unsloth()
    imports_s = round(time.time() - t, 2)
    from forge_pipeline.export.manifest import read_last_export
    from forge_pipeline.export.pipeline import validate_export
    from forge_pipeline.files import read_jsonl

    home = work / "home"
    manifest, folder = read_last_export(home / "models", home)
    adapter_dir = home / "training" / "final"
    t = time.time()
    v = validate_export(manifest.base_path(home), model_dir, read_jsonl(work / _eval_split(1)), manifest.quantization,
                        lora=manifest.gguf_path(folder), adapter_dir=adapter_dir, tokenizer_dir=adapter_dir,
                        parity=False)  # as the job's model_export asset (the evaluation's KLD is the fidelity check)
    return {"stage": "export_validation", "imports_s": imports_s, "validate_s": round(time.time() - t, 2),
            **{k: v.get(k) for k in ("loads", "has_chat_template", "parity_by", "load_error")}}


def fidelity_by_quantization(model_dir: Path, work: Path) -> dict:
    """Issue 14: the adapter applied to the quantized base, against the trained model, at each base
    quantization (BENCH_QUANTS, default q8_0 q4_k_m): the newest adapter is exported onto a base of that type
    (built once, as a person's first export at that type would), then evaluated on the nightly's eval split."""
    t = time.time()
    _import_unsloth()
    from forge_pipeline.evaluation.evaluate import evaluate_models
    from forge_pipeline.evaluation.served import ServedModel
    from forge_pipeline.export.pipeline import export_model

    home, final = work / "home", work / "home" / "training" / "final"
    eval_path = Path(json.loads((final / "manifest.json").read_text())["data"]["eval_path"])  # its own split
    eval_path = eval_path if eval_path.is_absolute() else home / eval_path
    rows = {"stage": "fidelity_by_quantization", "imports_s": round(time.time() - t, 2), "eval_split": eval_path.name}
    for quant in os.environ.get("BENCH_QUANTS", "q8_0 q4_k_m").split():
        t = time.time()
        exp = export_model(final, home / "models", quant=quant, validate=False, home=home,
                           log=lambda m: print(m, file=sys.stderr))
        export_s = round(time.time() - t, 2)
        t = time.time()
        base_gguf = Path(exp.base_gguf)
        ev = evaluate_models(ServedModel(base_gguf, Path(exp.gguf_path)), ServedModel(base_gguf, None), adapter_dir=final,
                             eval_path=eval_path, max_examples=50, log=lambda m: print(m, file=sys.stderr))
        rows[quant] = {"export_s": export_s, "export_status": exp.status, "evaluation_s": round(time.time() - t, 2),
                       "base_size_mb": round(base_gguf.stat().st_size / 2**20, 1), "fidelity": _fidelity(ev),
                       "eval_loss": ev.candidate.eval_loss, "base_eval_loss": ev.base.eval_loss}
    return rows


def run(model_dir: Path, work: Path, out: Path) -> None:
    import httpx

    port = 7399
    bases = sorted((work / "home" / "base_models").rglob("base-*.gguf"))
    env = {**os.environ, "FORGE_HOME": str(work / "home"), "FORGE_N_GPU_LAYERS": "-1",
           "FORGE_ALLOWED_MODEL_ROOTS": json.dumps([str(work)]), "FORGE_SERVING_URL": f"http://127.0.0.1:{port}"}
    if bases:  # serving holds the base, as after night 0
        env["FORGE_MODEL_PATH"] = str(bases[-1])
    else:  # no night 0 ran: this night builds the base GGUF (export base_s) and serving loads it with the adapter
        env["BENCH_FIRST_NIGHT"] = "1"
    server = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port)], env=env,
                              stdout=open(out / "serving.log", "w"), stderr=subprocess.STDOUT)
    try:
        t = time.time()
        while time.time() - t < 300:
            try:
                code = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
                if code == 200 or (code == 503 and "FORGE_MODEL_PATH" not in env):  # 503: up, with no model
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        rows = [{"stage": "serving_base_ready", "s": round(time.time() - t, 1)}]
        t0 = time.time()
        env.update(BENCH_T_LAUNCH=str(t0), BENCH_SERVING=f"http://127.0.0.1:{port}")
        proc = subprocess.run([sys.executable, "-m", "bench.gpu.nightly_8b", "nightly", str(model_dir), str(work)],
                              env=env, capture_output=True, text=True)
        (out / "nightly.log").write_text(proc.stderr[-200_000:])
        wall = round(time.time() - t0, 2)
        for line in proc.stdout.splitlines():
            if line.startswith("{\""):
                rows.append(json.loads(line) | {"wall_s": wall})
        if proc.returncode != 0:
            rows.append({"stage": "nightly", "exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-3:]})
        for row in rows:
            print(json.dumps(row), flush=True)
        with (out / "nightly_runs.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    mode, model_dir, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "run":
        run(model_dir, work, Path(sys.argv[4]))
        return
    row = {"prepare": prepare, "base": base, "nightly": nightly, "validate": validate,
           "quants": fidelity_by_quantization}[mode](model_dir, work)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
