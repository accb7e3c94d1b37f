"""Back-translated user turns on the GPU path (issue 12): the sample vault extracted and curated with
back-translation left at its default (on where llama.cpp offloads to a CUDA GPU), generating with a GGUF on
the GPU, cold and then from the cache. On the H100 no model can be fetched, so the GGUF is the random-weight
8B's q4_k_m base from the nightly bench: this measures that the path runs on a GPU and what it costs per
example, not the questions' quality (random weights write no usable question; each falls back to the
template with its reason). Prints one JSON line.

    python -m bench.gpu.backtranslate_gpu GGUF
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    gguf = Path(sys.argv[1])
    home = Path(tempfile.mkdtemp(prefix="forge-bt-"))
    os.environ.update(FORGE_HOME=str(home), FORGE_VAULT=str(ROOT / "examples" / "vault"),
                      FORGE_BACKTRANSLATION_MODEL=str(gguf))
    if os.environ.get("BENCH_FORCE_BACKTRANSLATION") != "1":  # the default decides (a CPU dry run forces it)
        os.environ.pop("FORGE_BACKTRANSLATE_USER_TURNS", None)
    else:
        os.environ["FORGE_BACKTRANSLATE_USER_TURNS"] = "1"
    from forge_pipeline.config import load_config
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.curation.user_turns import backtranslation_enabled, gpu_generation
    from forge_pipeline.extraction.extractor import run_extraction

    config = load_config()
    row = {"mode": "backtranslate-gpu", "model": gguf.name, "gpu_generation": gpu_generation(),
           "enabled_by_default": backtranslation_enabled(config)}
    run_extraction(config)
    for run in ("cold", "cached"):
        t = time.time()
        report = curate(config)
        row[run] = {"s": round(time.time() - t, 2), "user_turns": report.user_turns}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
