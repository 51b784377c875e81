"""Stop training on a NaN/inf loss without reading the device at every step.

:class:`NonFiniteGuard` keeps one boolean flag per training batch on the device (``isfinite`` of
the loss, no host sync) and reads all pending flags at once when a check is due: every
``interval`` optimizer steps (by default the trainer's ``log_every_n_steps``, where Lightning
syncs anyway to log) and whenever the weights are about to be used (validation, checkpoints, the
end of an epoch or of training). ``interval=1`` reads the flags before every optimizer step, the
only setting that stops before a bad update is applied, at the cost of one host sync per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NonFiniteGuard"]


@dataclass
class _Batch:
    """One training batch whose loss has not been checked yet."""

    nonfinite: Tensor
    step: int
    epoch: int
    batch_idx: int
    ids: list[str]


class NonFiniteGuard:
    """Record non-finite training losses on the device; raise when a check finds one.

    Args:
        interval: Optimizer steps between checks; ``None`` = the trainer's
            ``log_every_n_steps`` (given to :meth:`before_optimizer_step`), and no periodic
            check when that is 0. ``1`` checks before every optimizer step.

    Raises:
        ValueError: If ``interval`` is neither ``None`` nor an int >= 1.
    """

    def __init__(self, interval: int | None = None) -> None:
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int) or interval < 1
        ):
            raise ValueError(
                f"nonfinite_check_interval must be an int >= 1 or null (every "
                f"log_every_n_steps optimizer steps), got {interval!r}."
            )
        self.interval = interval
        self._pending: list[_Batch] = []
        self._steps = 0  # optimizer steps since the last check

    def reset(self) -> None:
        """Forget everything pending (at the start of a fit)."""
        self._pending, self._steps = [], 0

    def record(
        self, loss: Tensor, step: int, epoch: int, batch_idx: int, ids: Sequence[str]
    ) -> None:
        """Keep ``~isfinite(loss)`` on the loss' device (no host sync).

        Args:
            loss: The batch's scalar training loss.
            step: The optimizer step the batch feeds (``global_step`` during the batch).
            epoch: The current epoch.
            batch_idx: The batch index within the epoch.
            ids: The batch's example ids (the first 20 are named in the error).
        """
        flag = ~torch.isfinite(loss.detach())
        self._pending.append(_Batch(flag, step, epoch, batch_idx, list(ids)[:20]))

    def before_optimizer_step(self, global_step: int, log_every_n_steps: int) -> None:
        """Count the optimizer step about to be taken and check when one is due.

        Args:
            global_step: Optimizer steps taken so far (the step about to be taken has this
                number).
            log_every_n_steps: The trainer's logging interval, the default check interval.

        Raises:
            FloatingPointError: See :meth:`check`.
        """
        self._steps += 1
        interval = self.interval if self.interval is not None else log_every_n_steps
        if interval > 0 and self._steps >= interval:
            self.check(global_step)

    def check(self, global_step: int) -> None:
        """Read the pending flags with one host sync; raise if a loss was NaN/inf.

        Args:
            global_step: Optimizer steps taken so far; updates from steps at or after the bad
                loss's step and below this number have been applied.

        Raises:
            FloatingPointError: Naming the global step, epoch, batch index and example ids of
                the first non-finite loss and how many optimizer steps were taken after it.
        """
        pending, self._pending, self._steps = self._pending, [], 0
        if not pending:
            return
        flags = torch.stack([batch.nonfinite for batch in pending])
        if not bool(flags.any()):  # the host sync, once per check
            return
        bad = pending[int(flags.nonzero()[0, 0])]
        applied = max(0, global_step - bad.step)
        if applied == 0:
            taken = "the optimizer step was not taken"
        else:
            every = (
                f"every {self.interval} optimizer steps"
                if self.interval is not None
                else "every log_every_n_steps optimizer steps"
            )
            taken = (
                f"{applied} optimizer step(s) after it were already taken (the losses are "
                f"checked {every} and before validation, checkpoints and the end of each epoch; "
                "nonfinite_check_interval: 1 stops before the step)"
            )
        raise FloatingPointError(
            f"non-finite training loss at global step {bad.step} (epoch {bad.epoch}, batch_idx "
            f"{bad.batch_idx}, ids {bad.ids}); {taken}. Lower the learning rate, use bf16-mixed "
            "instead of 16-mixed, or check these inputs."
        )
