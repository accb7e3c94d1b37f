"""The batched probes' KV layout, measured: llama.cpp's unified KV buffer against one buffer per sequence,
answering the 8 default probes with serving's sampling and the evaluation's give-up (answers end at
different steps), alternating, 2 rounds x 2 seeds -> bench/results/probe_kv_layout.json.

    python -m bench.probe_kv_layout BASE_GGUF [ADAPTER_GGUF]
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "probe_kv_layout.json"


def main() -> None:
    import llama_cpp._internals as internals

    from forge_pipeline.evaluation import metrics
    from forge_pipeline.evaluation.probes import DEFAULT_PROBES
    from forge_pipeline.evaluation.served import LoadedModel, Sampling, ServedModel
    from forge_pipeline.files import atomic_write_json

    base, lora = Path(sys.argv[1]), (Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    real, mode = internals.LlamaContext, {"unified": False}

    class Context(real):  # decode_together's context, with the layout under test
        def __init__(self, *, model, params, verbose=True):
            params.kv_unified = mode["unified"]
            super().__init__(model=model, params=params, verbose=verbose)

    internals.LlamaContext = Context
    rows = []
    with LoadedModel(ServedModel(base, lora), 2048) as m:
        for r in range(2):
            for unified in ((False, True) if r % 2 == 0 else (True, False)):
                mode["unified"] = unified
                for seed in (0, 100):
                    t = time.perf_counter()
                    answers = m.answer_many(list(DEFAULT_PROBES), Sampling(seed=seed), give_up=metrics.loop_reason)
                    rows.append({"kv_unified": unified, "round": r, "seed": seed, "s": round(time.perf_counter() - t, 2),
                                 "tokens": [a.completion_tokens for a in answers],
                                 "texts_sha": hash(tuple(a.text for a in answers)) & 0xFFFFFFFF})
                    print(json.dumps(rows[-1]), flush=True)
    atomic_write_json(RESULTS, {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
                                "base": base.name, "adapter": lora.name if lora else None, "runs": rows})


if __name__ == "__main__":
    main()
