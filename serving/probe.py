"""Loads a GGUF and generates a few tokens, in a process of its own: a file that crashes llama.cpp takes
down this probe, never the server.  python -m serving.probe PATH [--n-ctx N]"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def probe_in_subprocess(path: Path, timeout_s: float, n_ctx: int = 256) -> dict:
    """{"ok": True, "tokens": n, ...} or {"ok": False, "error": "..."}; never raises for a bad model."""
    cmd = [sys.executable, "-m", "serving.probe", str(path), "--n-ctx", str(n_ctx)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the model did not load and generate within {timeout_s:.0f} s"}
    if proc.returncode != 0:
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        detail = json.loads(last).get("error", "") if last.startswith("{") else ""
        return {"ok": False, "error": f"llama.cpp {how} loading this file" + (f": {detail}" if detail else "")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--n-ctx", type=int, default=256)
    args = ap.parse_args()
    try:
        from llama_cpp import Llama

        llm = Llama(args.path, n_ctx=args.n_ctx, verbose=False)
        out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
        has_template = bool(llm.metadata.get("tokenizer.chat_template"))
        llm.close()
    except Exception as e:  # noqa: BLE001 - reported to the parent as a clean failure
        print(json.dumps({"ok": False, "error": str(e)[:300]}))
        return 1
    print(json.dumps({"ok": True, "tokens": out["usage"]["completion_tokens"], "chat_template": has_template}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
