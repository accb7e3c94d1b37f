"""Runs the llama.cpp side of GGUF validation in a child process, so a file that crashes llama.cpp fails
validation instead of killing the export (or Dagster step) that made it.

    python -m forge_pipeline.export.gguf_probe GGUF REQUEST.json   -> one JSON line on stdout

serving/probe.py is the serving side's load-and-generate probe (H1 owns it and is making it the single
probe); this one also scores perplexity and applies a LoRA adapter GGUF, so export keeps it until serving's
probe does both.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_probe(gguf: Path, prompts: list, seqs: list, timeout_s: float = 1800, lora: Path | None = None) -> dict:
    """``lora``: a LoRA adapter GGUF applied to ``gguf`` (the base), as serving applies it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"prompts": prompts, "seqs": seqs, "lora": str(lora) if lora else None}, f)
        request = f.name
    try:
        proc = subprocess.run([sys.executable, "-m", "forge_pipeline.export.gguf_probe", str(gguf), request],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"loads": False, "error": f"validation did not finish within {timeout_s:.0f} s", "answers": []}
    finally:
        Path(request).unlink(missing_ok=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        return {"loads": False, "error": f"llama.cpp {how} on this GGUF" + (f": {tail}" if tail else ""), "answers": []}
    return json.loads(lines[-1])


def main() -> int:
    from forge_pipeline.export.validate import gguf_perplexity, inspect_and_answer

    gguf, request = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    lora = Path(request["lora"]) if request.get("lora") else None
    result = inspect_and_answer(gguf, request["prompts"], lora=lora)
    if result["loads"] and request["seqs"]:
        result["gguf_perplexity"] = gguf_perplexity(gguf, [tuple(s) for s in request["seqs"]], lora=lora)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
