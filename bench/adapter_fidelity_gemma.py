"""Adapter fidelity on the CPU default (one run, ~3 min on 2 cores): the embedded Gemma 3 270M (dequantized HF
folder) + a LoRA r16/alpha 32 on the 7 projections with random B (std 0.02) -> adapter GGUF on the f16 base GGUF
built by ensure_base_gguf, and on the embedded q4_k_m GGUF itself; mean KL over one sentence against the
merged HF model (float32).
    python bench/adapter_fidelity_gemma.py GEMMA_HF_DIR ORIGINAL_Q4_GGUF WORK_DIR
GEMMA_HF_DIR: resolve_base_model("embedded:gemma-3-270m", home).path (a folder whose tokenizer.model, if any,
sentencepiece can load). Results: bench/results/adapter_fidelity_gemma_cpu.json."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forge_pipeline.export.base_gguf import ensure_base_gguf  # noqa: E402
from forge_pipeline.export.lora_gguf import adapter_base_problems, write_adapter_gguf  # noqa: E402
from forge_pipeline.export.validate import open_llama  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def kl(p, q) -> float:
    p = torch.log_softmax(torch.tensor(p, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.tensor(q, dtype=torch.float64), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def llama_logits(gguf, lora, ids) -> np.ndarray:
    llm = open_llama(gguf, lora, n_ctx=128, logits_all=True)
    llm.eval(ids)
    scores = np.array(llm.scores[:len(ids)])
    llm.close()
    return scores


def main() -> None:
    base, q4, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(base)
    text = "Looking back on this week, I realize the quiet mornings helped me decide."
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    out = {}
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        bare = model(torch.tensor([ids])).logits[0].numpy()
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    peft.save_pretrained(work / "adapter")
    tok.save_pretrained(work / "adapter")
    with torch.no_grad():
        merged = peft.merge_and_unload()(torch.tensor([ids])).logits[0].numpy()
    out["hf_s"] = round(time.time() - t, 1)
    t = time.time()
    b = ensure_base_gguf(work / "adapter", base, "bench:gemma", work / "base_models", "f16")
    out["base_build_s"] = round(time.time() - t, 1)
    t = time.time()
    a = write_adapter_gguf(work / "adapter", base, work / "adapter.gguf", {"base_gguf_sha256": b.sha256})
    out.update(adapter_s=round(time.time() - t, 2), adapter_mb=a.size_mb, arch=a.architecture,
               problems_f16=adapter_base_problems(work / "adapter.gguf", b.path, b.sha256))
    out["kl_merged_vs_f16base+lora"] = kl(merged, llama_logits(b.path, work / "adapter.gguf", ids))
    out["kl_merged_vs_f16base"] = kl(merged, llama_logits(b.path, None, ids))
    out["kl_hfbase_vs_f16base"] = kl(bare, llama_logits(b.path, None, ids))
    out["kl_merged_vs_q4base+lora"] = kl(merged, llama_logits(q4, work / "adapter.gguf", ids))
    out["problems_q4"] = adapter_base_problems(work / "adapter.gguf", Path(q4))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
