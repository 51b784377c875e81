"""Learning-rate schedule of :class:`~medllama_fusion.trainers.FusionClassifier`."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["warmup_cosine_schedule"]


def warmup_cosine_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """Per-step linear warmup from 0, then cosine decay to ``min_ratio`` times the base rate.

    transformers' ``get_cosine_with_min_lr_schedule_with_warmup``. Its multiplier is a
    ``functools.partial``, which :class:`LambdaLR` stores as an empty dict in its state, so
    checkpoints load with ``weights_only=True`` and a resumed run uses the schedule built for its
    own length.

    Args:
        optimizer: The optimizer whose learning rates are scheduled.
        warmup_steps: Optimizer steps of linear warmup (``0 <= warmup_steps <= total_steps``).
        total_steps: Total optimizer steps of the run (``>= 1``).
        min_ratio: Final multiplier at ``total_steps``.

    Raises:
        InputError: If the step counts are inconsistent.
    """
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    from ..errors import InputError

    if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
        raise InputError(
            f"warmup_steps={warmup_steps} and total_steps={total_steps} must satisfy "
            "0 <= warmup_steps <= total_steps and total_steps >= 1; lower warmup_steps or "
            "set trainer.max_epochs / trainer.max_steps."
        )
    return get_cosine_with_min_lr_schedule_with_warmup(  # type: ignore[no-any-return]
        optimizer, warmup_steps, total_steps, min_lr_rate=min_ratio
    )
