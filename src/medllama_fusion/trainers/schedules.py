"""Learning-rate schedules for :class:`~medllama_fusion.trainers.FusionClassifier`."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosine", "warmup_cosine_schedule"]


class WarmupCosine:
    """Multiplier of the base learning rate: linear warmup, then cosine decay to ``min_ratio``.

    A plain callable object (not a lambda) so that :class:`LambdaLR` stores its attributes in the
    scheduler state dict, which keeps checkpoints loadable with ``weights_only=True``.

    Args:
        warmup_steps: Optimizer steps of linear warmup from ``1/(warmup_steps+1)`` to 1.
        total_steps: Total optimizer steps of the run.
        min_ratio: Final multiplier at ``total_steps``.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps} and total_steps={total_steps} must satisfy "
                "0 <= warmup_steps <= total_steps and total_steps >= 1; lower warmup_steps or "
                "set trainer.max_epochs / trainer.max_steps."
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        """Return the learning-rate multiplier at optimizer step ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """Build a per-step :class:`LambdaLR` with :class:`WarmupCosine`."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio))
