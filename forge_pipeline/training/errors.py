"""Training's errors, beneath every other training module so none of them imports another to raise one."""
from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot run or did not produce a usable adapter; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite: training diverged and nothing was published."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (torch's own type, or a RuntimeError saying so)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
