"""Training's errors, beneath every other training module so none of them imports another to raise one."""
from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot run or did not produce a usable adapter; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite: training diverged and nothing was published."""
