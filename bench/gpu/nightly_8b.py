"""The adapter-native nightly on the H100, in one command: curated JSONL -> LoRA adapter -> adapter GGUF ->
evaluation -> swapped into a running server that keeps the 8B base resident. Each stage is timed, and the bare
unsloth peer runs in the same command (bench/results/gpu_nightly_h100.json).

    python -m bench.gpu.nightly_8b prepare MODEL_DIR WORK     # random Llama-3.1-8B, SentencePiece tokenizer, data
    python -m bench.gpu.nightly_8b base MODEL_DIR WORK        # the base q4_k_m GGUF, built once per base (not nightly)
    python -m bench.gpu.nightly_8b run MODEL_DIR WORK OUT     # serving on the base, then the timed nightly process
    python -m bench.gpu.nightly_8b nightly MODEL_DIR WORK     # (the timed process itself; `run` starts it)

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

T_LAUNCH = float(os.environ.get("FORGE_BENCH_T_LAUNCH", time.time()))  # the parent's clock at our launch


def prepare(model_dir: Path, work: Path) -> dict:
    from bench.gpu.export_8b import use_sentencepiece_tokenizer
    from bench.gpu.train_shape import make_data

    t = time.time()
    if not (model_dir / "config.json").exists():
        bare = Path(os.environ.get("FORGE_BARE_BENCH", ".device/bare_unsloth_bench.py"))
        subprocess.run([sys.executable, str(bare), "make", str(model_dir)], check=True)
    use_sentencepiece_tokenizer(model_dir)
    work.mkdir(parents=True, exist_ok=True)
    make_data(work / "train.jsonl", str(model_dir), 500, (100, 400))
    make_data(work / "eval.jsonl", str(model_dir), 50, (100, 400), seed=1)
    return {"stage": "prepare", "s": round(time.time() - t, 1)}


def base(model_dir: Path, work: Path) -> dict:
    """The resident base: converted and quantized once per base model (FORGE_HOME/base_models in production)."""
    from forge_pipeline.export.gguf import convert_to_gguf, quantize_gguf

    t = time.time()
    f16 = convert_to_gguf(model_dir, work / "base-f16.gguf", "f16")
    convert_s = time.time() - t
    q = quantize_gguf(f16, work / "base-q4_k_m.gguf", "q4_k_m")
    f16.unlink()
    from forge_pipeline.files import sha256_file

    # serving refuses an adapter whose forge.base_gguf_sha256 is not the loaded base's: hash once, here
    (work / "base-q4_k_m.sha256").write_text(sha256_file(q))
    return {"stage": "base_gguf", "convert_s": round(convert_s, 1), "quantize_s": round(time.time() - t - convert_s, 1),
            "size_mb": round(q.stat().st_size / 2**20, 1)}


def _quick_eval(base_gguf: Path, adapter_gguf: Path, eval_rows: list[dict], probes: list[str]) -> dict:
    """Fallback when forge_pipeline.evaluation is absent: eval loss through llama.cpp on the eval set and
    greedy probe answers, base + adapter as served."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(base_gguf), lora_path=str(adapter_gguf), n_gpu_layers=-1, n_ctx=1024, logits_all=True,
                verbose=False)
    nll, n = 0.0, 0
    for row in eval_rows:
        text = " ".join(m["content"] for m in row["messages"])
        toks = llm.tokenize(text.encode())[:1000]
        llm.reset()
        llm.eval(toks)
        logits = np.asarray(llm.scores[: len(toks) - 1], dtype=np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll += float((logz - logits[np.arange(len(toks) - 1), toks[1:]]).sum())
        n += len(toks) - 1
    answers = [llm.create_completion(p, max_tokens=48, temperature=0)["choices"][0]["text"] for p in probes]
    return {"eval_loss": round(nll / max(n, 1), 4), "eval_tokens": n, "probe_answers": len(answers)}


def nightly(model_dir: Path, work: Path) -> dict:
    """The timed nightly, as the scheduled job runs it: train -> adapter GGUF -> evaluate -> swap."""
    stages = {"process_start_s": round(time.time() - T_LAUNCH, 2)}
    t = time.time()
    import unsloth  # noqa: F401  (before transformers, as in production)

    from forge_pipeline.training.config import TrainingConfig
    from forge_pipeline.training.trainer import run_training

    stages["imports_s"] = round(time.time() - t, 2)
    cfg = TrainingConfig(base_model=str(model_dir), backend="unsloth", min_examples=1, save_steps=10_000,
                         eval_steps=10_000)
    t = time.time()
    report = run_training(work / "train.jsonl", work / "training", cfg, home=work,
                          log=lambda m: print(m, file=sys.stderr))
    stages["training_total_s"] = round(time.time() - t, 2)
    stages["load_s"], stages["train_s"] = report.metrics.get("load_s"), report.metrics.get("train_s")
    import torch

    torch.cuda.empty_cache()
    from forge_pipeline.export.lora_gguf import write_adapter_gguf

    base_gguf = work / "base-q4_k_m.gguf"
    sha_file = work / "base-q4_k_m.sha256"
    if not sha_file.exists():  # a base made before the base phase recorded it
        from forge_pipeline.files import sha256_file

        sha_file.write_text(sha256_file(base_gguf))
    t = time.time()
    adapter = write_adapter_gguf(Path(report.final_dir), str(model_dir), work / "adapter.gguf",
                                 {"base_gguf_sha256": sha_file.read_text().strip()})
    stages["adapter_export_s"] = round(time.time() - t, 2)
    adapter_path = Path(getattr(adapter, "path", work / "adapter.gguf"))
    rows = [json.loads(line) for line in (work / "eval.jsonl").read_text().splitlines()]
    probes = ["What did I learn this week?", "How do I feel about my work lately?", "What should I change next month?",
              "Looking back, what mattered most?", "What am I avoiding?", "What gives me energy?",
              "What did I decide about the project?", "What would I tell my past self?"]
    t = time.time()
    ev = _quick_eval(base_gguf, adapter_path, rows, probes)
    stages["evaluation_s"] = round(time.time() - t, 2)
    import httpx

    t = time.time()
    r = httpx.post(os.environ["FORGE_BENCH_SERVING"] + "/admin/reload-model",
                   json={"model_path": str(adapter_path)}, timeout=600)
    stages["swap_s"] = round(time.time() - t, 2)
    stages["swap_status"] = r.status_code
    stages["total_s"] = round(time.time() - T_LAUNCH, 2)
    m = report.metrics
    return {"stage": "nightly", **stages, "adapter_size_mb": round(adapter_path.stat().st_size / 2**20, 1),
            "evaluation": ev, "global_step": m.get("global_step"), "train_loss": m.get("train_loss"),
            "tokens_seen": m.get("tokens_seen"), "steady_tokens_per_s": m.get("steady_tokens_per_s"),
            "batch_layout": m.get("batch_layout"), "peak_memory_gib": m.get("peak_memory_gib"),
            "swap_response": r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text[:300]}


def run(model_dir: Path, work: Path, out: Path) -> None:
    import httpx

    port = 7399
    env = {**os.environ, "FORGE_HOME": str(work / "home"), "FORGE_MODEL_PATH": str(work / "base-q4_k_m.gguf"),
           "FORGE_N_GPU_LAYERS": "-1", "FORGE_ALLOWED_MODEL_ROOTS": json.dumps([str(work)]),
           "FORGE_SERVING_URL": f"http://127.0.0.1:{port}", "FORGE_SERVE_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port)], env=env,
                              stdout=open(out / "serving.log", "w"), stderr=subprocess.STDOUT)
    try:
        t = time.time()
        while time.time() - t < 300:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        rows = [{"stage": "serving_base_ready", "s": round(time.time() - t, 1)}]
        t0 = time.time()
        env.update(FORGE_BENCH_T_LAUNCH=str(t0), FORGE_BENCH_SERVING=f"http://127.0.0.1:{port}")
        proc = subprocess.run([sys.executable, "-m", "bench.gpu.nightly_8b", "nightly", str(model_dir), str(work)],
                              env=env, capture_output=True, text=True)
        (out / "nightly.log").write_text(proc.stderr[-200_000:])
        wall = round(time.time() - t0, 2)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
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
    row = {"prepare": prepare, "base": base, "nightly": nightly}[mode](model_dir, work)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
