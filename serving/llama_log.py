"""llama.cpp's own log lines: quiet unless FORGE_VERBOSE, errors always.

llama-cpp-python 0.3.36 routes every native line (llama.cpp's and ggml's) through one callback set with
`llama_log_set`, and decides what to print from the line's level. Its table is for an older enum (INFO 1,
WARN 2, ERROR 3), but the llama.cpp it bundles numbers them DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
(measured: loading the embedded Gemma gives 1,223 lines at 1, 149 at 2, and 'using full-size SWA cache' and
'control-looking token' at 3). So with verbose=False it printed warnings (to the terminal of `forge serve`
and `forge up`, and into Dagster runs) and hid errors (e.g. why an adapter was refused). `quiet_native_logs()`
replaces that callback, process-wide, with one that reads this enum; call it where a model is loaded."""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

ERROR, CONT = 4, 5  # ggml_log_level in the bundled llama.cpp; CONT continues the previous line's level
_state: dict = {"callback": None, "verbose": None, "last": 0}


def verbose_from_env() -> bool:
    return os.environ.get("FORGE_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def quiet_native_logs(verbose: Optional[bool] = None) -> None:
    """Native lines below ERROR go only when ``verbose`` (default: FORGE_VERBOSE); errors always, to stderr.
    Idempotent; the callback stays referenced here (ctypes would free it and llama.cpp call a dead pointer)."""
    verbose = verbose_from_env() if verbose is None else verbose
    if _state["callback"] is not None and _state["verbose"] == verbose:
        return
    import llama_cpp  # imports llama_cpp._logger, which sets its own callback: ours must come after

    def log(level: int, text: bytes, user_data) -> None:
        if level != CONT:
            _state["last"] = level
        if verbose or _state["last"] >= ERROR:
            print(text.decode("utf-8", errors="replace"), end="", flush=True, file=sys.stderr)

    callback = llama_cpp.llama_log_callback(log)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _state.update(callback=callback, verbose=verbose)
