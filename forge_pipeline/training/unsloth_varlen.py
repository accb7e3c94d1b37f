"""Let unsloth attend over packed rows with torch's own flash-attention varlen kernel on torch 2.11.

Packed (padding-free) rows hold many short examples; each must attend only to itself. unsloth 2026.10 runs
that as one varlen flash call per layer when `torch.nn.attention.varlen.varlen_attn` takes `enable_gqa`
(torch >= 2.12). On torch 2.11 it falls back to one SDPA launch per example per layer: on the H100 that
made packed reflection-length examples 40% slower than unpacked rows (bench/results/gpu_training_h100.json).

The kernel unsloth calls on its fast path, `aten._flash_attention_forward/backward` with cumulative
sequence lengths, exists in torch 2.11 and takes grouped-query K/V as they are; only the public wrapper's
signature is missing. `enable()` points unsloth at that kernel, but only after a probe on this GPU shows
it computing the same forward and backward as per-example SDPA; otherwise nothing changes.
"""
from __future__ import annotations

from collections.abc import Callable


def _aten_flash_varlen(dispatch) -> Callable:
    """The signature unsloth expects of `varlen_attn`, over its own thin autograd wrapper of the aten kernel."""
    lean = dispatch._LeanFlashVarlen

    def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        window_size = tuple(window_size)
        return lean.apply(q, k, v, cu_q, max_q, window_size == (-1, 0), scale, window_size[0], window_size[1])

    return varlen_attn


def _probe(varlen_attn) -> float:
    """Largest difference, relative to the reference's largest value, of the output and the Q/K/V gradients
    against per-example causal SDPA, with grouped-query K/V (4 query heads per K/V head)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    lengths, heads, kv_heads, dim = [37, 200, 5, 90], 8, 2, 128
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = varlen_attn(q, k, v, cu, cu, max(lengths), max(lengths), window_size=(-1, 0), enable_gqa=True)
    grad = torch.randn_like(out)
    fast = [out, *torch.autograd.grad(out, (q, k, v), grad)]
    ref_out = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        ref_out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)[0].transpose(0, 1))
    ref = torch.cat(ref_out)
    ref = [ref, *torch.autograd.grad(ref, (q, k, v), grad)]
    torch.cuda.synchronize()
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6)).item()
               for a, b in zip(fast, ref))


def enable(tolerance: float = 0.02) -> str:
    """Returns what attention packed rows will use, for the training manifest."""
    try:
        from unsloth.utils import attention_dispatch as dispatch
    except ImportError:
        return "unsloth not installed"
    current = getattr(dispatch, "_TORCH_VARLEN_ATTN", None)
    if current is not None:  # unsloth's own, or ours from an earlier training in this process
        return getattr(current, "forge_result", "torch varlen flash (unsloth's own)")
    needed = ("_LeanFlashVarlen", "_LEAN_VARLEN", "_torch_varlen_takes", "_varlen_attn_call")
    if not all(hasattr(dispatch, name) for name in needed):
        return "per-example SDPA (this unsloth has no varlen hook to enable)"
    import torch

    if not torch.cuda.is_available():
        return "per-example SDPA (no CUDA)"
    varlen_attn = _aten_flash_varlen(dispatch)
    try:
        error = _probe(varlen_attn)
    except Exception as e:  # noqa: BLE001 - any failure keeps unsloth's own path
        return f"per-example SDPA (flash varlen probe failed: {type(e).__name__}: {str(e)[:120]})"
    if not error <= tolerance:
        return f"per-example SDPA (flash varlen differs from SDPA by {error:.3g})"
    varlen_attn.forge_result = f"torch varlen flash (enabled by forge; probe relative difference {error:.2g})"
    dispatch._TORCH_VARLEN_ATTN = varlen_attn
    dispatch._LEAN_VARLEN = True
    dispatch._varlen_can_use_cudnn = lambda *args, **kwargs: False
    return varlen_attn.forge_result
