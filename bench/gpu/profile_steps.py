"""Where a training step's time goes, forge against bare unsloth at one shape (issue 14: forge trained 4x512
at 0.96x bare unsloth with no profile of the gap). torch.profiler records steps 6-10 of each; the GPU's busy
time per step (the sum of its kernels and copies) against the step's wall time, and the kernels and host ops
that take the most (compute kernels; copies apart), show whether forge's extra time is GPU work bare unsloth does not do or host time the GPU
waits through. Wall time is read without the profiler too (the profiler slows the host side).

    python -m bench.gpu.profile_steps MODEL_DIR bare|forge --seq 512 [--skip 0]
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

START, STEPS = 6, 5  # steps 6..10: past warm-up, unsloth's first-pass offload planning and the skip planner


def summarize(prof, steps: int, wall_s: float, wall_unprofiled_s: float) -> dict:
    from torch.autograd import DeviceType

    events = prof.key_averages()
    device = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731
    # Only the kernel and copy rows themselves: a host op (aten::mm) also carries its kernels' time as its
    # own "self device time", so summing every row counted each kernel twice (the first run on the H100,
    # bench/results/raw/h100_20261207s10/skip: 460 ms of "busy" GPU in a 312 ms step).
    kernels = sorted((e for e in events if e.device_type == DeviceType.CUDA and device(e) > 0), key=device, reverse=True)
    # copies run beside the compute on unsloth's offload stream: summed with the kernels they would overstate
    # how busy the GPU is, so they are their own figure
    copies = [e for e in kernels if e.key.lower().startswith(("memcpy", "memset"))]
    busy_ms = sum(device(e) for e in kernels if e not in copies) / 1e3 / steps
    host = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "steps_profiled": steps,
        "wall_ms_per_step_unprofiled": round(wall_unprofiled_s * 1e3, 2),
        "wall_ms_per_step_profiled": round(wall_s * 1e3 / steps, 2),
        "gpu_busy_ms_per_step": round(busy_ms, 2),
        "gpu_idle_ms_per_step_unprofiled": round(wall_unprofiled_s * 1e3 - busy_ms, 2),
        "copies_ms_per_step": round(sum(device(e) for e in copies) / 1e3 / steps, 2),
        "top_gpu": [{"name": e.key[:100], "ms_per_step": round(device(e) / 1e3 / steps, 3),
                     "calls_per_step": round(e.count / steps, 1)} for e in kernels[:30]],
        "top_host_self": [{"name": e.key[:100], "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
                           "calls_per_step": round(e.count / steps, 1)} for e in host[:30]],
    }


def profiler():
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=False, with_stack=False)


def bare(model_dir: str, batch: int, seq: int) -> dict:
    """bare_unsloth_bench.py's loop (load_unsloth + bench) at one shape."""
    import bitsandbytes as bnb
    import torch
    from unsloth import FastLanguageModel

    m, _ = FastLanguageModel.from_pretrained(model_dir, max_seq_length=2048, load_in_4bit=True, dtype=torch.bfloat16)
    m = FastLanguageModel.get_peft_model(m, r=16, lora_alpha=32, lora_dropout=0.0, bias="none", random_state=0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"], use_gradient_checkpointing="unsloth")
    m.train()
    opt = bnb.optim.AdamW8bit([p for p in m.parameters() if p.requires_grad], lr=2e-4)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(3, 600, (batch, seq), generator=g).cuda() for _ in range(4)]

    def step(i):
        x = batches[i % 4]
        loss = m(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    total = START + 2 * STEPS
    for i in range(START):
        step(i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(START, START + STEPS):
        step(i)
    torch.cuda.synchronize()
    unprofiled = (time.perf_counter() - t) / STEPS
    with profiler() as prof:
        t = time.perf_counter()
        for i in range(START + STEPS, total):
            step(i)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    return summarize(prof, STEPS, wall, unprofiled)


def forge(model_dir: str, batch: int, seq: int, skip) -> dict:
    """bench.gpu.train_shape's run, with a callback that times steps START..START+STEPS unprofiled and the
    STEPS after them under the profiler."""
    import torch
    from transformers import TrainerCallback

    from bench.gpu import train_shape
    from forge_pipeline.training import session

    found: dict = {}

    class ProfileSteps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step in (START, START + STEPS):
                torch.cuda.synchronize()
                found[state.global_step] = time.perf_counter()
                if state.global_step == START + STEPS:
                    found["prof"] = profiler()
                    found["prof"].__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == START + 2 * STEPS:
                torch.cuda.synchronize()
                found["end"] = time.perf_counter()
                found["prof"].__exit__(None, None, None)

    plain = session.make_callbacks

    def make_callbacks(*a, **k):
        callbacks, throughput = plain(*a, **k)
        return [*callbacks, ProfileSteps()], throughput

    session.make_callbacks = make_callbacks
    args = argparse.Namespace(model_dir=model_dir, backend="unsloth", batch=batch, steps=START + 2 * STEPS + 1,
                              packing=False, packing_strategy=None, loss_type="nll", padding_free="auto")
    train_shape.run_shape(args, seq, skip)
    unprofiled = (found[START + STEPS] - found[START]) / STEPS
    return summarize(found["prof"], STEPS, found["end"] - found[START + STEPS], unprofiled)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("mode", choices=("bare", "forge"))
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--skip", default="0", help="forge: checkpoint_skip_layers (bare unsloth checkpoints every layer)")
    args = ap.parse_args()
    import unsloth  # noqa: F401  (before transformers)

    out = bare(args.model_dir, args.batch, args.seq) if args.mode == "bare" else forge(args.model_dir, args.batch, args.seq, args.skip)
    print(json.dumps({"mode": f"profile-{args.mode}", "batch": args.batch, "seq": args.seq,
                      **({"checkpoint_skip_layers": args.skip} if args.mode == "forge" else {}), **out}), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
