"""Reflection back-translation on the sample vault, CPU defaults: its cost and its effect (issue 12).

1. `forge extract` + curation (templates), then back-translation over the curated examples with the
   embedded Gemma 3 270M through llama-cpp-python: seconds cold, seconds on a re-run (cache), how many
   questions were accepted and why the others fell back, and a few of them side by side with the template.
2. Two trainings with the CPU default config (24 steps; forge_pipeline/training/config.py), one on the
   template user turns, one on the back-translated ones; same ids in train and eval (the split is by id),
   same assistant turns. Each run's own eval loss and base eval loss come from its manifest; then base and
   both adapters are scored on BOTH eval sets (assistant tokens only, the chat template the adapter was
   saved with), and answer a few probe prompts greedily.

One run each (2 shared CPU cores, other work running): timings carry that noise.
Run: .venv/bin/python bench/user_turns.py  ->  bench/results/user_turns.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "user_turns.json"
PROBES = 3
MAX_NEW_TOKENS = 60


def eval_loss(model, tok, rows: list[dict]) -> float:
    """Token-weighted mean NLL of the assistant turn given system + user (what the trainer's loss covers)."""
    import torch

    total, count = 0.0, 0
    for r in rows:
        prompt = tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(r["messages"], tokenize=False)
        assert full.startswith(prompt), "chat template does not extend the prompt"
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(p_ids) + ids[len(p_ids):]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        n = sum(1 for x in labels[1:] if x != -100)
        total, count = total + out.loss.item() * n, count + n
    return round(total / count, 4)


def answers(model, tok, prompts: list[str], system: str) -> list[str]:
    import torch

    out = []
    for p in prompts:
        text = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": p}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-user-turns-"))
    os.environ["FORGE_HOME"] = str(home)
    from forge_pipeline.config import load_config
    from forge_pipeline.curation.curate import curate, read_curated
    from forge_pipeline.curation.user_turns import backtranslate_user_turns, choose_model
    from forge_pipeline.evaluation.probes import DEFAULT_PROBES
    from forge_pipeline.extraction.extractor import run_extraction
    from forge_pipeline.files import atomic_write_json, write_jsonl

    result: dict = {"vault": "examples/vault", "device": "cpu", "cpu_count": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()}
    config = load_config(backtranslate_user_turns=False)
    run_extraction(config)
    curate(config)
    train, evals = read_curated(config)

    choice = choose_model(config)
    t = time.perf_counter()
    rows, rep = backtranslate_user_turns(train + evals, config, model=choice)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    _, rep2 = backtranslate_user_turns(train + evals, config, model=choice)
    warm = time.perf_counter() - t
    bt_train, bt_eval = rows[:len(train)], rows[len(train):]
    result["cost"] = {"examples": len(rows), "cold_s": round(cold, 1), "per_example_s": round(cold / len(rows), 2),
                      "rerun_s": round(warm, 3), "rerun_generated": rep2.generated, "report": rep.to_dict()}
    result["samples"] = [{"source_file": b["source_file"], "template": a["messages"][1]["content"],
                          "back_translated": b["messages"][1]["content"], "used": b["user_turn"]}
                         for a, b in list(zip(train, bt_train))[:12]]
    print(json.dumps(result["cost"]), flush=True)
    data = home / "bench_data"
    write_jsonl(data / "tpl_train.jsonl", train)
    write_jsonl(data / "tpl_eval.jsonl", evals)
    write_jsonl(data / "bt_train.jsonl", bt_train)
    write_jsonl(data / "bt_eval.jsonl", bt_eval)

    from forge_pipeline.training.config import resolve_training_config
    from forge_pipeline.training.trainer import run_training

    cfg = resolve_training_config({}, "cpu")
    result["training_config"] = {k: getattr(cfg, k) for k in ("max_steps", "batch_size", "learning_rate",
                                                              "max_seq_length", "lora_rank", "num_epochs")}
    runs = {}
    for name in ("tpl", "bt"):
        t = time.perf_counter()
        rep_t = run_training(data / f"{name}_train.jsonl", home / f"train_{name}", cfg,
                             eval_path=data / f"{name}_eval.jsonl", home=home, force_cpu=True, log=lambda m: None)
        m = rep_t.metrics
        runs[name] = {"final_dir": rep_t.final_dir, "wall_s": round(time.perf_counter() - t, 1),
                      "train_loss": m.get("train_loss"), "eval_loss_own_set": m.get("eval_loss"),
                      "base_eval_loss_own_set": m.get("base_eval_loss")}
        print(name, json.dumps(runs[name]), flush=True)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_pipeline.training.base_model import resolve_base_model

    torch.manual_seed(0)
    base_dir = resolve_base_model(None, home, cuda=False).path
    tok = AutoTokenizer.from_pretrained(runs["tpl"]["final_dir"])
    sets = {"template_eval": evals, "back_translated_eval": bt_eval}
    probes = list(DEFAULT_PROBES[:PROBES])
    scores, probe_answers = {}, {}
    for name in ("base", "tpl", "bt"):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if name != "base":
            model = PeftModel.from_pretrained(model, runs[name]["final_dir"])
        model.eval()
        scores[name] = {s: eval_loss(model, tok, rows_) for s, rows_ in sets.items()}
        probe_answers[name] = dict(zip(probes, answers(model, tok, probes, config.system_prompt)))
        print(name, scores[name], flush=True)
    result["runs"] = runs
    result["eval_loss"] = {"what": "mean NLL per assistant token (same assistant turns in both sets; only the user "
                                   "turn differs), base model and the two adapters", **scores}
    result["probe_answers"] = probe_answers
    atomic_write_json(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
