"""Loads a GGUF (optionally with a LoRA adapter GGUF on it) in a process of its own and reports what it can
do: a file that crashes llama.cpp takes down this probe, never the server or the export that asked.

    probe_gguf(path, lora=None, prompts=[], max_tokens=48, seqs=[], n_ctx=256, timeout_s=180) -> dict

Always: load, generate 4 greedy tokens from "Hello", read the chat template and architecture. `prompts`
(lists of chat messages) are answered greedily; `seqs` ([token ids, start]) give the perplexity of
ids[start:]. Result keys: ok, error, tokens, chat_template, architecture, answers, perplexity.
Child entry point: python -m serving.probe < REQUEST.json  (one JSON line on stdout).

`ResidentValidator(base)` keeps one probe process with the base loaded and checks each new adapter on it
(load, apply, decode one token with it and check its logits are finite, free): a fresh probe process spent
4.5-9.6 s reloading the 270M Gemma base on this busy 2-core machine for every adapter, against a sub-second
swap target. A crash in llama.cpp still kills only that process; the next check starts a new one."""
from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional


def probe_gguf(path: Path, *, lora: Optional[Path] = None, prompts: list = (), max_tokens: int = 48,
               seqs: list = (), n_ctx: int = 256, timeout_s: float = 180) -> dict:
    """Never raises for a bad model: {"ok": False, "error": "..."} instead."""
    request = {"path": str(path), "lora": str(lora) if lora else None, "prompts": list(prompts),
               "max_tokens": max_tokens, "seqs": [list(s) for s in seqs], "n_ctx": n_ctx}
    try:
        proc = subprocess.run([sys.executable, "-m", "serving.probe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the model did not load and generate within {timeout_s:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
    detail = json.loads(lines[-1]).get("error", "") if lines else ""
    if not detail:  # llama.cpp says why on stderr (e.g. "tensor 'blk.0...' has incorrect shape")
        errs = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "failed" in ln.lower()]
        detail = (errs or proc.stderr.strip().splitlines() or [""])[-1][:300]
    what = "this adapter" if lora else "this file"
    return {"ok": False, "error": f"llama.cpp {how} loading {what}" + (f": {detail}" if detail else "")}


def _nll(logits, ids: list[int], start: int) -> tuple[float, int]:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    pred = logits[start - 1:len(ids) - 1]
    targets = np.asarray(ids[start:])
    m = pred.max(axis=-1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(pred - m).sum(axis=-1))
    return float((logz - pred[np.arange(len(targets)), targets]).sum()), len(targets)


def _apply_lora(llm, path: str) -> None:
    import ctypes

    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(llm.model, path.encode())
    if not handle:
        raise ValueError("llama.cpp refused the adapter (wrong base, wrong tensor shapes or a damaged file)")
    arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, arr, 1, (ctypes.c_float * 1)(1.0)) != 0:
        raise ValueError("llama.cpp could not set the adapter on a context")


def _run(req: dict) -> dict:
    from llama_cpp import Llama

    from serving.llama_log import quiet_native_logs

    quiet_native_logs()

    seqs = [(list(ids), int(start)) for ids, start in req["seqs"]]
    n_ctx = max([req["n_ctx"], *(len(ids) + 8 for ids, _ in seqs)])
    llm = Llama(req["path"], n_ctx=n_ctx, logits_all=bool(seqs), verbose=False)
    try:
        if req.get("lora"):
            _apply_lora(llm, req["lora"])  # mmap stays on for the base, unlike Llama(lora_path=...)
        out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
        answers = []
        for msgs in req["prompts"]:
            a = llm.create_chat_completion(messages=msgs, temperature=0.0, max_tokens=req["max_tokens"], seed=0)
            answers.append(a["choices"][0]["message"]["content"] or "")
        perplexity = None
        if seqs:
            total, n = 0.0, 0
            for ids, start in seqs:
                llm.reset()
                llm.eval(ids)
                s, k = _nll(llm.scores[:len(ids)], ids, start)
                total, n = total + s, n + k
            perplexity = math.exp(total / max(n, 1))
        return {"ok": True, "error": None, "tokens": out["usage"]["completion_tokens"],
                "chat_template": llm.metadata.get("tokenizer.chat_template"),
                "architecture": llm.metadata.get("general.architecture"), "answers": answers,
                "perplexity": perplexity}
    finally:
        llm.close()


class ResidentValidator:
    """One probe process per loaded base, kept alive between adapter checks (see the module docstring)."""

    def __init__(self, base: Path, n_ctx: int = 256):
        self.base, self.n_ctx = Path(base), n_ctx
        self._proc: Optional[subprocess.Popen] = None
        self._stderr = None
        self._lock = threading.Lock()

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        except (OSError, ValueError, AttributeError):
            return ""
        errs = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
        return (errs or lines or [""])[-1][:300]

    def _readline(self, deadline: float) -> Optional[str]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([self._proc.stdout], [], [], left)[0]:
                line = self._proc.stdout.readline()
                if not line or line.startswith("{"):
                    return line  # "" at EOF: the process died
                continue  # anything else on stdout is noise

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def start(self, timeout_s: float = 180) -> dict:
        with self._lock:
            return self._ensure(time.monotonic() + timeout_s)

    def _ensure(self, deadline: float) -> dict:
        if self._proc is not None and self._proc.poll() is None:
            return {"ok": True}
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen([sys.executable, "-m", "serving.probe", "--resident", str(self.base),
                                       "--n-ctx", str(self.n_ctx)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, bufsize=1)
        line = self._readline(deadline)
        if not line:
            self._kill()
            return {"ok": False, "error": f"the validation process could not load the base {self.base.name}"
                    + (f": {self._stderr_tail()}" if self._stderr_tail() else "")}
        return json.loads(line)

    def check(self, lora: Path, timeout_s: float = 180) -> dict:
        """{"ok": True, "tokens": n} or {"ok": False, "error": ...}; never raises for a bad adapter."""
        with self._lock:
            deadline = time.monotonic() + timeout_s
            ready = self._ensure(deadline)
            if not ready.get("ok"):
                return ready
            try:
                self._proc.stdin.write(json.dumps({"lora": str(lora)}) + "\n")
                self._proc.stdin.flush()
            except OSError:
                pass
            line = self._readline(deadline)
            if line:
                return json.loads(line)
            rc = self._proc.poll()
            self._kill()
            if rc is None:
                return {"ok": False, "error": f"the adapter did not load and generate within {timeout_s:.0f} s"}
            how = f"crashed (signal {-rc})" if rc < 0 else f"failed (exit {rc})"
            tail = self._stderr_tail()
            return {"ok": False, "error": f"llama.cpp {how} loading this adapter" + (f": {tail}" if tail else "")}

    def close(self) -> None:
        with self._lock:
            self._kill()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None


def _check_adapter(llm, lora: str) -> dict:
    """Load `lora` on the resident base, decode one token with it, and free it again."""
    import ctypes

    import llama_cpp
    import numpy as np

    handle = llama_cpp.llama_adapter_lora_init(llm.model, lora.encode())
    if not handle:
        return {"ok": False, "error": "llama.cpp refused the adapter (wrong base, wrong tensor shapes or a "
                                      "damaged file)"}
    try:
        arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        llama_cpp.llama_set_adapters_lora(llm.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        llm.reset()
        llm._ctx.kv_cache_clear()
        # One token (BOS) runs every layer, and so every adapter matrix, through llama.cpp's compute: a type
        # or layout it cannot compute aborts here, in this process. No sampling, no tokenizer: the
        # logits are read directly, and NaN/inf in them (an adapter with NaN weights loads and decodes
        # without complaint, then every answer is garbage) is a refusal.
        llm.eval([llm.token_bos()])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        bad = int((~np.isfinite(logits)).sum())
        if bad:
            return {"ok": False, "error": f"with this adapter the model's output is not finite ({bad} of "
                                          f"{logits.size} logits are NaN or infinite): its weights are damaged"}
        return {"ok": True, "tokens": 1}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": str(e)[:300]}
    finally:
        llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        llm.reset()
        llama_cpp.llama_adapter_lora_free(handle)


def _resident(base: str, n_ctx: int) -> int:
    """Serve adapter checks on one loaded base: one JSON request line in, one JSON answer line out."""
    from llama_cpp import Llama

    from serving.llama_log import quiet_native_logs

    quiet_native_logs()
    try:
        # One thread for single tokens AND for batches. llama-cpp-python's default n_threads_batch is every
        # core, and ggml's threads wait for each other at a barrier after every op: with the server
        # generating on the same 2 cores, one of two threads was always descheduled and the other waited
        # for it, so a 2-token check took 0.3-8.5 s (1.7 s median per swap under 3 streams). With one
        # thread it took 0.1-0.2 s under the same load (measured 2026-11-25, load average 7).
        llm = Llama(base, n_ctx=n_ctx, n_threads=1, n_threads_batch=1, n_batch=8, verbose=False)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"ok": False, "error": str(e)[:300]}), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_check_adapter(llm, json.loads(line)["lora"])), flush=True)
    llm.close()
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--resident":
        n_ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 256
        return _resident(sys.argv[2], n_ctx)
    try:
        result = _run(json.loads(sys.stdin.read()))
    except Exception as e:  # noqa: BLE001 - reported to the parent as a clean failure
        print(json.dumps({"ok": False, "error": str(e)[:300]}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
