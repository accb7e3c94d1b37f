"""What reading GGUF headers costs with gguf.GGUFReader and with serving/gguf_header.py, on the embedded
Gemma 3 270M (262,144-token vocabulary): the two reads the nightly and the first run make.

1. The adapter export's check of an adapter against its base (export/lora_gguf.adapter_base_problems): both
   headers and tensor tables. Base: the f16 base GGUF the export builds from the embedded model.
2. The SentencePiece rebuild of a fresh install (training/base_model._write_sentencepiece_tokenizer): the
   tokenizer's tokens, scores and token types.

Each read twice, alternating, in this one process. Run: .venv/bin/python -m bench.gguf_reads -> bench/results/gguf_reads.json
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 3)


def _tokenizer_arrays_with_ggufreader(path: Path) -> list:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields  # one read, as the rebuild did
    return [fields[k].contents() for k in TOKENIZER_KEYS]


def main() -> None:
    import tempfile

    from gguf import GGUFReader

    from forge_pipeline.config import ForgeSettings
    from forge_pipeline.export.base_gguf import ensure_base_gguf
    from forge_pipeline.export.lora_gguf import adapter_base_problems
    from forge_pipeline.training.base_model import EMBEDDED_GEMMA, resolve_base_model
    from forge_pipeline_tests.helpers import make_lora_gguf
    from serving.gguf_header import read_gguf_header

    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="bench-gguf-reads-"))
    settings = ForgeSettings(home=home)
    base = resolve_base_model(EMBEDDED_GEMMA, home, cuda=False)
    q4 = next((home / "base_models" / "gemma-3-270m-gguf").glob("*.gguf"))
    f16 = ensure_base_gguf(Path(base.path), base.path, base.fingerprint, settings.base_models_dir, "f16", log=lambda m: None).path
    adapter = make_lora_gguf(f16, home / "adapter.gguf")
    rows = []
    for round_ in range(2):
        rows.append({"round": round_, "read": "adapter check (adapter + f16 base headers)",
                     "gguf_reader_s": _time(lambda: (GGUFReader(str(adapter)), GGUFReader(str(f16)))),
                     "header_reader_s": _time(lambda: adapter_base_problems(adapter, f16))})
        rows.append({"round": round_, "read": "tokenizer arrays (q4_k_m embedded GGUF)",
                     "gguf_reader_s": _time(lambda: _tokenizer_arrays_with_ggufreader(q4)),
                     "header_reader_s": _time(lambda: read_gguf_header(q4, arrays=TOKENIZER_KEYS))})
    out = {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "base_f16_mb": round(f16.stat().st_size / 2**20, 1),
           "embedded_q4_k_m_mb": round(q4.stat().st_size / 2**20, 1), "runs": rows}
    (ROOT / "bench" / "results" / "gguf_reads.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
