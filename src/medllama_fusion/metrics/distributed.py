"""Distributed evaluation: the torchmetrics metric that gathers and de-duplicates rows."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAUROC
from torchmetrics.utilities.data import dim_zero_cat

from medllama_fusion.metrics.auroc import per_class_auroc, undefined_classes

__all__ = ["DefinedMultilabelAUROC", "deduplicate"]


def deduplicate(index: Tensor) -> Tensor:
    """Positions that keep the first occurrence of each ``index`` value, in ascending index order.

    Args:
        index: Dataset row index of each gathered row ``[M]`` (repeats allowed).

    Returns:
        LongTensor of positions into ``index``; ``index[result]`` is sorted and unique.
    """
    order = torch.sort(index, stable=True).indices
    ordered = index[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first]


_NO_INDEX_WARNED = False


def _warn_no_index_once() -> None:
    global _NO_INDEX_WARNED
    if _NO_INDEX_WARNED:
        return
    _NO_INDEX_WARNED = True
    warnings.warn(
        "evaluation batches have no `index` (dataset row index): under distributed evaluation "
        "the rows Lightning's DistributedSampler repeats to even out the processes are counted "
        "twice. Emit `index` (and `group_index`) from your collate function for exact metrics.",
        UserWarning,
        stacklevel=3,
    )


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DefinedMultilabelAUROC(MultilabelAUROC):
    """Exact per-class :class:`MultilabelAUROC`, de-duplicated by row index across processes.

    ``update`` also takes the dataset row ``index``, the report ``group_index`` and the per-row
    loss; these are gathered with the predictions. ``compute()`` keeps the first occurrence of
    every index (Lightning's ``DistributedSampler`` repeats rows to even out the processes; a
    de-duplication keeps every rank on the same number of steps, so the collectives of logging
    stay in lockstep, which an unpadded sampler would not), orders rows by index (so results do
    not depend on the number of processes) and returns the per-class AUROC ``[C]`` (``NaN`` for
    a class with no positives or no negatives, with a warning naming it). The de-duplicated
    rows stay available as ``gathered_preds``, ``gathered_target``, ``gathered_index``,
    ``gathered_groups`` (``None`` without ``group_index``) and ``gathered_loss`` (the mean of
    the per-row losses, ``None`` without them).

    Args:
        num_labels: Number of classes.
        label_names: Names used in warnings; defaults to ``class_<i>``.
    """

    index: list[Tensor]
    group_index: list[Tensor]
    row_loss: list[Tensor]

    def __init__(self, num_labels: int, label_names: Sequence[str] | None = None) -> None:
        super().__init__(num_labels=num_labels, average="none", thresholds=None)
        self.label_names = (
            list(label_names) if label_names else [f"class_{i}" for i in range(num_labels)]
        )
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("group_index", default=[], dist_reduce_fx="cat")
        self.add_state("row_loss", default=[], dist_reduce_fx="cat")
        self.gathered_preds: Tensor | None = None
        self.gathered_target: Tensor | None = None
        self.gathered_index: Tensor | None = None
        self.gathered_groups: Tensor | None = None
        self.gathered_loss: Tensor | None = None

    def update(  # type: ignore[override]
        self,
        preds: Tensor,
        target: Tensor,
        index: Tensor | None = None,
        group_index: Tensor | None = None,
        row_loss: Tensor | None = None,
    ) -> None:
        """Add a batch: scores ``[B, C]``, labels ``[B, C]``, optional ``[B]`` row data."""
        super().update(preds, target)
        if index is not None:
            self.index.append(index.reshape(-1).long())
        if group_index is not None:
            self.group_index.append(group_index.reshape(-1).long())
        if row_loss is not None:
            self.row_loss.append(row_loss.reshape(-1).float())

    @staticmethod
    def _rows(state: list[Tensor] | Tensor, count: int) -> Tensor | None:
        if isinstance(state, list) and not state:
            return None
        rows = dim_zero_cat(state)
        return rows if rows.numel() == count else None

    def compute(self) -> Tensor:  # type: ignore[override]
        """Return per-class AUROC ``[C]`` with ``NaN`` for undefined classes."""
        preds = dim_zero_cat(self.preds)
        target = dim_zero_cat(self.target)
        count = preds.shape[0]
        index = self._rows(self.index, count)
        groups = self._rows(self.group_index, count)
        loss = self._rows(self.row_loss, count)
        if index is not None:
            keep = deduplicate(index.long())
            preds, target, index = preds[keep], target[keep], index[keep].long()
            groups = groups[keep].long() if groups is not None else None
            loss = loss[keep] if loss is not None else None
        elif _world_size() > 1:
            _warn_no_index_once()
        self.gathered_preds, self.gathered_target = preds, target
        self.gathered_index, self.gathered_groups = index, groups
        self.gathered_loss = loss.double().mean() if loss is not None else None
        per_class = per_class_auroc(preds, target)
        undefined = undefined_classes(target)
        if bool(undefined.any()):
            names = [n for n, u in zip(self.label_names, undefined.tolist(), strict=False) if u]
            warnings.warn(
                f"AUROC is undefined (no positives or no negatives in the evaluated set) for "
                f"{names}; reported as NaN and excluded from the mean. Evaluate on a larger set "
                "to get these classes.",
                UserWarning,
                stacklevel=2,
            )
        return per_class
