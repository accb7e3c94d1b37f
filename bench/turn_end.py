"""Does a fine-tuned model end its turn? For each FORGE_HOME given (a main job's output: its base HF
directory, its trained adapter and its eval split), measured with transformers + peft, independent of the
pipeline's own evaluation (which answers through llama.cpp):

- teacher forced: the probability of <end_of_turn> where each eval answer ends, and its rank there;
- sampled: the default probe prompts answered with serving's default sampling (temperature 0.7, top-p 0.95,
  repetition penalty 1.1, 256 tokens): how many end (EOS or end of turn) before the limit, mean length.

Also the base's end-of-turn row: how many other embedding rows lie within cosine 0.99 of it (training/
turn_tokens.py). Run, e.g. with the old and the new conversion's main job outputs:

    .venv/bin/python -m bench.turn_end before=/tmp/mainjob/after/home after=/tmp/mainjob2/after/home

-> bench/results/turn_end.json
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "turn_end.json"


def measure(home: Path) -> dict:
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_pipeline.evaluation.probes import DEFAULT_PROBES

    manifest = json.loads((home / "training" / "final" / "manifest.json").read_text())
    base = home / manifest["base_model"]["path"]
    adapter = home / "training" / "final"
    tok = AutoTokenizer.from_pretrained(adapter)
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.embed_tokens.weight").float()
    unit = w / w.norm(dim=1, keepdim=True)
    near = int((unit @ unit[eot] > 0.99).sum()) - 1
    del w, unit
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()

    def ids_of(messages, **kw) -> list[int]:
        out = tok.apply_chat_template(messages, tokenize=True, return_dict=False, **kw)
        return out["input_ids"] if isinstance(out, dict) else list(out)

    probs, ranks = [], []
    for line in (home / "training_data" / "curated_eval.jsonl").read_text().splitlines():
        ids = ids_of(json.loads(line)["messages"])
        end = max(i for i, t in enumerate(ids) if t == eot)  # where the assistant's answer ends
        with torch.no_grad():
            logp = model(torch.tensor([ids[:end]])).logits[0, -1].log_softmax(-1)
        probs.append(float(logp[eot].exp()))
        ranks.append(int((logp > logp[eot]).sum()))
    torch.manual_seed(0)
    answers, t = [], time.perf_counter()
    for prompt in DEFAULT_PROBES:
        ids = ids_of([{"role": "user", "content": prompt}], add_generation_prompt=True)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=256, do_sample=True, temperature=0.7, top_p=0.95,
                                 repetition_penalty=1.1, eos_token_id=[tok.eos_token_id, eot],
                                 pad_token_id=tok.pad_token_id)
        new = out[0, len(ids):].tolist()
        answers.append({"prompt": prompt, "tokens": len(new), "ended": new[-1] in (tok.eos_token_id, eot),
                        "answer": tok.decode(new, skip_special_tokens=False)})
    return {
        "home": str(home), "base": manifest["base_model"]["fingerprint"],
        "steps": manifest["metrics"]["global_step"], "eval_loss": manifest["metrics"]["eval_loss"],
        "base_eval_loss": manifest["metrics"]["base_eval_loss"], "train_sha256": manifest["data"]["train_sha256"],
        "end_of_turn_rows_within_cos_0.99": near,
        "p_end_of_turn_at_answer_end": {"mean": round(sum(probs) / len(probs), 5), "n": len(probs)},
        "rank_at_answer_end": {"median": sorted(ranks)[len(ranks) // 2], "max": max(ranks)},
        "probes_ended": sum(a["ended"] for a in answers), "probes": len(answers),
        "probe_mean_tokens": round(sum(a["tokens"] for a in answers) / len(answers), 1),
        "probe_generation_s": round(time.perf_counter() - t, 1), "answers": answers,
    }


def main(argv: list[str]) -> None:
    runs = {}
    for arg in argv:
        label, home = arg.split("=", 1)
        runs[label] = measure(Path(home))
        print(json.dumps({label: {k: v for k, v in runs[label].items() if k != "answers"}}), flush=True)
    from forge_pipeline.files import atomic_write_json

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    atomic_write_json(RESULTS, {"what": __doc__.split("\n\n")[0], "commit": commit,
                                "measured": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "runs": runs})


if __name__ == "__main__":
    main(sys.argv[1:])
