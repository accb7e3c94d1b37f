"""LoadedModel.logits before and after it asked llama.cpp for the answer rows only, side by side in ONE
command (alternating, so a loaded machine slows both alike) -> bench/results/evaluation_speed.json, "logits".

    python -m bench.logits_rows HOME [--rounds 3]

HOME: a `python -m bench.quality nights` home (/tmp/forge-quality-bench/nights): the embedded Gemma's f16 base
GGUF, night 3's adapter GGUF and eval split (11 conversations), as the CPU evaluation scores them. "before" is
llama-cpp-python's eval() with every row's logits kept in ``scores`` and copied out (the code before this
change, inlined here); "after" is LoadedModel.logits. Each scores every conversation's answer (the loss pass)
and its neutral-prompt twin (the prompt-gain pass); the summed NLLs must agree.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "evaluation_speed.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from forge_pipeline.config import load_config
    from forge_pipeline.evaluation import metrics
    from forge_pipeline.evaluation.reference import ReferenceModel, neutral_prompt_sequences, training_sequences
    from forge_pipeline.evaluation.served import LoadedModel, ServedModel
    from forge_pipeline.files import read_jsonl

    settings = load_config(home=args.home)
    base = next(settings.base_models_dir.glob("gguf/*/base-*.gguf"))
    exports = sorted(p for p in settings.models_dir.iterdir() if p.is_dir())
    adapter = next(exports[2].glob("adapter-*.gguf"))  # night 3's, in the order `nights` made them
    rows = read_jsonl(settings.eval_path)
    tok = ReferenceModel(settings.training_dir / "run" / "final").tokenizer
    seqs = [s for s in training_sequences(tok, rows, 1024) + neutral_prompt_sequences(tok, rows, 1024) if s]

    with LoadedModel(ServedModel(base, adapter), 1024 + 512) as m:
        def before(ids, start):
            m.llm.reset()
            m.llm.eval(ids)
            return np.array(m.llm.scores[start - 1:len(ids)], dtype=np.float32)

        def after(ids, start):
            return m.logits(ids, start - 1)

        ways, times, nll = {"before": before, "after": after}, {"before": [], "after": []}, {}
        for _ in range(args.rounds):
            for name, fn in ways.items():
                t = time.perf_counter()
                total = 0.0
                for ids, start in seqs:
                    total += float(metrics.token_nll(fn(ids, start), ids, start, rows_from=start - 1).sum())
                times[name].append(round(time.perf_counter() - t, 2))
                nll[name] = total
    out = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "command": "python -m bench.logits_rows HOME",
           "sequences": len(seqs), "tokens": sum(len(ids) for ids, _ in seqs),
           "answer_tokens": sum(len(ids) - start for ids, start in seqs),
           "seconds_per_pass": times, "median_ratio_after_over_before":
               round(float(np.median(times["after"]) / np.median(times["before"])), 3),
           "summed_nll": nll, "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
           "measured": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    data = json.loads(RESULTS.read_text())
    data["logits"] = out
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
