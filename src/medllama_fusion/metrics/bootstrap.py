"""The report-clustered percentile bootstrap of per-class and macro AUROC.

Kept beside the Newcombe intervals as ``auroc_report(..., method="bootstrap")``; it needs about
40 positive reports to cover (``docs/intervals.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from medllama_fusion.metrics.auroc import (
    DEFAULT_MIN_POSITIVES,
    _check_confidence,
    _cluster_ids,
    ci_classes,
    weighted_auroc,
)

__all__ = ["BootstrapCI", "bootstrap_auroc", "bootstrap_weights"]


def bootstrap_weights(clusters: Tensor, num_resamples: int = 1000, seed: int = 0) -> Tensor:
    """Row weights of a cluster bootstrap: each resample draws ``G`` clusters with replacement.

    Args:
        clusters: Cluster id ``0..G-1`` of each row, LongTensor ``[N]``.
        num_resamples: Number of resamples ``R``.
        seed: Seed of a CPU :class:`torch.Generator` (identical draws on every device/rank).

    Returns:
        Float64 tensor ``[R, N]`` on ``clusters.device``: how often each row's cluster was drawn.
    """
    num_clusters = int(clusters.max()) + 1 if clusters.numel() else 0
    if num_clusters < 1 or num_resamples < 1:
        raise ValueError(
            f"bootstrap needs at least one row and num_resamples >= 1, got {clusters.numel()} "
            f"rows and {num_resamples}; evaluate on a non-empty set and set bootstrap_resamples "
            ">= 1."
        )
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, num_clusters, (num_resamples, num_clusters), generator=generator)
    counts = torch.zeros(num_resamples, num_clusters, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return counts.to(clusters.device)[:, clusters]


@dataclass
class BootstrapCI:
    """Result of :func:`bootstrap_auroc`.

    Attributes:
        class_ci: ``[2, C]`` lower/upper bounds per class (``NaN`` outside ``classes``).
        mean_ci: ``[2]`` lower/upper bounds of the macro mean over ``classes``.
        classes: ``[C]`` bool, the fixed class set.
        num_clusters: Number of clusters resampled (rows when no groups were given).
        dropped_resamples: Resamples left out of the macro interval because a class of the fixed
            set had no positive or no negative in them.
    """

    class_ci: Tensor
    mean_ci: Tensor
    classes: Tensor
    num_clusters: int
    dropped_resamples: int


def bootstrap_auroc(
    preds: Tensor,
    target: Tensor,
    groups: Tensor | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    chunk_size: int = 100,
) -> BootstrapCI:
    """Cluster percentile-bootstrap intervals of per-class AUROC and of the macro mean.

    Each resample draws as many clusters (``groups``; rows when ``None``) as the set has, with
    replacement, and keeps all rows of every drawn cluster. The class set is fixed by the full
    set (:func:`ci_classes`); each resample's macro mean averages exactly that set. A resample in
    which a fixed class has no positive or no negative has no macro mean: it is left out of the
    macro interval (counted in ``dropped_resamples``) and of that class's interval, never
    averaged over fewer classes.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        groups: Cluster (report) id per row ``[N]`` (any integers), or ``None`` for rows.
        num_resamples: Number of resamples.
        seed: Seed of the resampling generator.
        confidence: Two-sided confidence level in (0, 1).
        min_positives: Fewest positives and negatives of a class in the fixed set.
        chunk_size: Resamples processed at once (bounds memory to ``chunk_size * N * C``).

    Returns:
        The intervals, the fixed class set and the resampling counts.
    """
    _check_confidence(confidence)
    classes = ci_classes(target, min_positives)
    clusters = _cluster_ids(groups, preds.shape[0], preds.device)
    weights = bootstrap_weights(clusters, num_resamples, seed)
    aucs = torch.cat(
        [
            weighted_auroc(preds, target, weights[start : start + chunk_size])
            for start in range(0, num_resamples, chunk_size)
        ]
    )  # [R, C]
    aucs = torch.where(classes, aucs, torch.full_like(aucs, math.nan))
    alpha = (1.0 - confidence) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64, device=aucs.device)
    class_ci = torch.full((2, target.shape[1]), math.nan, dtype=torch.float64, device=aucs.device)
    mean_ci = torch.full((2,), math.nan, dtype=torch.float64, device=aucs.device)
    dropped = 0
    if bool(classes.any()):
        fixed = aucs[:, classes]
        class_ci[:, classes] = torch.nanquantile(fixed, q, dim=0)
        complete = ~torch.isnan(fixed).any(dim=1)
        dropped = int((~complete).sum())
        if bool(complete.any()):
            mean_ci = torch.quantile(fixed[complete].mean(dim=1), q)
    return BootstrapCI(class_ci, mean_ci, classes, int(clusters.max()) + 1, dropped)
