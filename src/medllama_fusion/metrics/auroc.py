"""Per-class AUROC and the fixed class set that intervals and macro means average.

Per-class AUROC comes from torchmetrics; :func:`weighted_auroc` is the weighted Mann-Whitney
formula for many resamples at once (torchmetrics has no sample weights). A class with no
positives or no negatives has no AUROC (``NaN``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multilabel_auroc,
)

__all__ = [
    "DEFAULT_MIN_POSITIVES",
    "ci_classes",
    "per_class_auroc",
    "undefined_classes",
    "weighted_auroc",
]

DEFAULT_MIN_POSITIVES = 5
"""Fewest positive (and negative) reports a class needs for an interval and the macro mean.

Chosen from the coverage simulation of ``docs/intervals.md`` (``benchmarks/interval_coverage.py``,
377 reports, binormal scores with AUROC 0.856, one row per report and two images per report with
correlated scores): the 95 % intervals of :func:`auroc_intervals` covered the true AUROC in
95.1-96.6 % of 4000 simulated test sets at 5, 10, 20 and 40 positive reports (96.5-97.7 % at
AUROC 0.962), the macro interval in 95.3-97.6 % of 1000. Below 5 positive reports nothing was
measured, so those classes get no interval. The percentile bootstrap covered only 79-88 % at 5
and 10 positive reports; with ``method="bootstrap"`` use 40 or more.
"""


def undefined_classes(target: Tensor) -> Tensor:
    """Return a boolean mask of classes whose AUROC is undefined.

    Args:
        target: Labels in {0, 1}, shape ``[..., N, C]``.

    Returns:
        Bool tensor ``[..., C]``: ``True`` where a class has no positive or no negative example.
    """
    positives = target.sum(dim=-2)
    return (positives == 0) | (positives == target.shape[-2])


def ci_classes(
    target: Tensor, min_positives: int = DEFAULT_MIN_POSITIVES, groups: Tensor | None = None
) -> Tensor:
    """Return the fixed class set of the intervals and the macro mean.

    Args:
        target: Labels ``[N, C]`` in {0, 1}.
        min_positives: Fewest positives and fewest negatives a class needs (``>= 1``).
        groups: Report (cluster) id per row ``[N]``: then positive and negative *reports* are
            counted (a report with a positive row is a positive report), since the rows of one
            report are not independent evidence. ``None``: rows are counted.

    Returns:
        Bool tensor ``[C]``: ``True`` for classes with at least ``min_positives`` positives and
        at least ``min_positives`` negatives.
    """
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}.")
    positives, negatives = _class_counts(target, groups)
    return torch.minimum(positives, negatives) >= min_positives


def _class_counts(target: Tensor, groups: Tensor | None) -> tuple[Tensor, Tensor]:
    """Positive and negative rows per class, or reports (groups) when ``groups`` is given."""
    target = target.long()
    if groups is None:
        positives = target.sum(dim=0)
        return positives, target.shape[0] - positives
    clusters = _cluster_ids(groups, target.shape[0], target.device)
    sums = torch.zeros(int(clusters.max()) + 1 if clusters.numel() else 0, target.shape[1])
    sums = sums.to(target.device, torch.float64)
    positives = sums.index_add(0, clusters, target.double())
    negatives = sums.index_add(0, clusters, 1.0 - target.double())
    return (positives > 0).sum(dim=0), (negatives > 0).sum(dim=0)


def per_class_auroc(preds: Tensor, target: Tensor) -> Tensor:
    """Exact AUROC per class (torchmetrics ``multilabel_auroc``), ``NaN`` where it is undefined.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.

    Returns:
        AUROC ``[C]``; ``NaN`` for a class with no positives or no negatives (without the warning
        torchmetrics gives for it).
    """
    undefined = undefined_classes(target)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(positive|negative) samples in targets.*")
        auc = multilabel_auroc(
            preds,
            target.long(),
            target.shape[-1],
            average="none",
            thresholds=None,
            validate_args=False,
        )
    return torch.where(undefined.to(auc.device), torch.full_like(auc, math.nan), auc)


def weighted_auroc(preds: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """AUROC per class with row weights, for many weightings at once.

    Kept beside torchmetrics, whose AUROC takes no row weights and one set per call.

    ``sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg)``. With integer
    weights (bootstrap draw counts) this equals the AUROC of the data set in which row ``i``
    appears ``w_i`` times. The scores are sorted once; each weighting costs ``O(N C)``.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        weights: Non-negative row weights ``[R, N]``.

    Returns:
        AUROC ``[R, C]`` in float64; ``NaN`` where a class has no positive or no negative weight.
    """
    scores, order = preds.double().sort(dim=0)  # [N, C]
    labels = target.double().gather(0, order)
    columns = scores.t().contiguous()  # [C, N]
    start = torch.searchsorted(columns, columns, side="left").t()  # first row of the tie block
    stop = torch.searchsorted(columns, columns, side="right").t()  # one past its last row
    w = weights.double()[:, order]  # [R, N, C], rows in each class's score order
    w_pos = w * labels
    w_neg = w - w_pos
    cum = torch.nn.functional.pad(w_neg.cumsum(dim=1), (0, 0, 1, 0))  # [R, N + 1, C]
    rows = w.shape[0]
    below = cum.gather(1, start.unsqueeze(0).expand(rows, -1, -1))
    upto = cum.gather(1, stop.unsqueeze(0).expand(rows, -1, -1))
    wins = (w_pos * (below + 0.5 * (upto - below))).sum(dim=1)
    total_pos, total_neg = w_pos.sum(dim=1), w_neg.sum(dim=1)
    defined = (total_pos > 0) & (total_neg > 0)
    auc = wins / (total_pos * total_neg)
    return torch.where(defined, auc, torch.full_like(auc, math.nan))


def _cluster_ids(groups: Tensor | None, num_rows: int, device: torch.device) -> Tensor:
    """Map each row to a cluster ``0..G-1`` (one cluster per row when ``groups`` is None)."""
    if groups is None:
        return torch.arange(num_rows, device=device)
    if groups.shape != (num_rows,):
        raise ValueError(
            f"groups must have one entry per row ({num_rows}), got shape {tuple(groups.shape)}."
        )
    return torch.unique(groups.to(device), return_inverse=True)[1]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95.")


def _normal_quantile(confidence: float) -> float:
    """The two-sided standard normal critical value ``z`` of ``confidence`` (1.96 for 0.95)."""
    return float(torch.special.ndtri(torch.tensor(0.5 + confidence / 2.0, dtype=torch.float64)))
