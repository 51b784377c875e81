"""Every number and figure of the evaluation: AUROC with intervals, thresholds, calibration.

The functions here are pure (tensors in, tensors, tables or figures out); the
:class:`~medllama_fusion.trainers.FusionClassifier` and the
:class:`~medllama_fusion.trainers.OperatingPoints` callback only call them, then log and write
the results.

- **AUROC.** Per-class AUROC comes from torchmetrics (:func:`per_class_auroc`, and
  :class:`DefinedMultilabelAUROC`, which accumulates on device and gathers across processes).
  Under distributed evaluation the gathered rows are de-duplicated by their dataset row ``index``
  (Lightning's ``DistributedSampler`` pads an odd-sized set with repeated rows), so every sample
  counts exactly once. A class with no positives or no negatives in the evaluated set has no
  AUROC: it is reported as ``NaN``.
- **Intervals.** :func:`auroc_report` gives every class a Newcombe score interval
  (:func:`auroc_intervals`): Newcombe's (2006) Mann-Whitney variance as a function of the AUROC,
  inverted (the interval holds every AUROC within ``z`` of its own standard errors of the
  estimate), and widened by the design effect of the report groups, the ratio of the DeLong
  variance with the placement values summed per report (Obuchowski 1997) to the one without
  (:func:`auroc_influence`): the images of one report share its labels and text and are not
  independent. The macro interval adds the classes' covariances (their DeLong correlations) and
  is a Wald interval on the logit scale. By simulation these 95 % intervals cover the true AUROC
  in 95-97 % of test sets from 5 positive reports on, where the cluster percentile bootstrap
  (:func:`bootstrap_auroc`, still available as ``method="bootstrap"``) covers 80-90 % below 20
  (``docs/intervals.md``). Intervals are computed for a fixed class set, the classes with at
  least ``min_positives`` positive and negative reports (default :data:`DEFAULT_MIN_POSITIVES`);
  the macro mean and its interval average exactly that set. The others are reported with their
  point AUROC (when defined) and a note, never averaged in. :func:`compare` gives the paired
  difference of two models on the same rows (per class and macro) with its interval and p-value.
  Bootstrap resample AUROCs come from :func:`weighted_auroc` (weighted Mann-Whitney formula, ties
  count 1/2), vectorised over resamples and classes.
- **Operating points.** :func:`select_thresholds` chooses one decision threshold per class,
  :func:`threshold_metrics` gives sensitivity, specificity, F1 at those thresholds and the
  expected calibration error, :func:`threshold_rows` their table.
- **Tables and figures.** :func:`markdown_table` renders every table of the library (AUROC via
  :func:`format_markdown_table`, operating points, positives per split, trainable parameters);
  :func:`plot_roc_curves` and :func:`plot_reliability` draw the ROC curves and the reliability
  diagram (matplotlib, imported when called: the ``plots`` extra).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAUROC
from torchmetrics.functional.classification import (
    binary_calibration_error,
    binary_precision_recall_curve,
    binary_specificity_at_sensitivity,
    multilabel_auroc,
    multilabel_f1_score,
    multilabel_recall,
    multilabel_specificity,
)
from torchmetrics.utilities.data import dim_zero_cat

from medllama_fusion.extras import require

__all__ = [
    "DEFAULT_MIN_POSITIVES",
    "AUROCInfluence",
    "AUROCIntervals",
    "AUROCReport",
    "BootstrapCI",
    "Comparison",
    "DefinedMultilabelAUROC",
    "IntervalMethod",
    "ThresholdMethod",
    "auroc_influence",
    "auroc_intervals",
    "auroc_report",
    "bootstrap_auroc",
    "bootstrap_weights",
    "ci_classes",
    "compare",
    "deduplicate",
    "format_markdown_table",
    "markdown_table",
    "newcombe_variance",
    "per_class_auroc",
    "placement_values",
    "plot_reliability",
    "plot_roc_curves",
    "select_thresholds",
    "threshold_metrics",
    "threshold_rows",
    "undefined_classes",
    "weighted_auroc",
]

ThresholdMethod = Literal["f1", "sensitivity"]
"""How :func:`select_thresholds` chooses a threshold: maximal F1, or a target sensitivity."""

IntervalMethod = Literal["newcombe", "bootstrap"]
"""How :func:`auroc_report` builds its intervals: ``"newcombe"`` (:func:`auroc_intervals`, the
default) or ``"bootstrap"`` (:func:`bootstrap_auroc`, the cluster percentile bootstrap)."""

DEFAULT_MIN_POSITIVES = 5
"""Fewest positive (and negative) reports a class needs for an interval and the macro mean.

Chosen from the coverage simulation of ``docs/intervals.md`` (``benchmarks/interval_coverage.py``,
377 reports, binormal scores with AUROC 0.856, one row per report and two images per report with
correlated scores): the 95 % intervals of :func:`auroc_intervals` covered the true AUROC in
95.4-96.6 % of 4000 simulated test sets at 5, 10, 20 and 40 positive reports (96.1-97.7 % at
AUROC 0.962), the macro interval in 94.7-96.7 % of 2000. Below 5 positive reports nothing was
measured, so those classes get no interval. The percentile bootstrap covered only 79-89 % at 5
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


# ---------------------------------------------------------------------------------------------
# Newcombe score intervals with report-clustered DeLong design effects; paired comparison
# ---------------------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95.")


def _normal_quantile(confidence: float) -> float:
    """The two-sided standard normal critical value ``z`` of ``confidence`` (1.96 for 0.95)."""
    return float(torch.special.ndtri(torch.tensor(0.5 + confidence / 2.0, dtype=torch.float64)))


def _betainc(a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """Regularized incomplete beta function ``I_x(a, b)``, elementwise (float64).

    Lentz's continued fraction (as in Numerical Recipes' ``betai``), on the side of
    ``(a + 1) / (a + b + 2)`` where it converges fast; iterated until every element has
    converged to double precision (at most 500 steps).
    """
    a, b, x = torch.broadcast_tensors(a.double(), b.double(), x.double())
    flip = x > (a + 1.0) / (a + b + 2.0)
    p, q, y = torch.where(flip, b, a), torch.where(flip, a, b), torch.where(flip, 1.0 - x, x)
    tiny = 1e-300

    def guard(value: Tensor) -> Tensor:
        return torch.where(value.abs() < tiny, tiny, value)

    c = torch.ones_like(y)
    d = 1.0 / guard(1.0 - (p + q) * y / (p + 1.0))
    fraction = d
    for m in range(1, 501):
        even = m * (q - m) * y / ((p + 2 * m - 1.0) * (p + 2 * m))
        d = 1.0 / guard(1.0 + even * d)
        c = guard(1.0 + even / c)
        fraction = fraction * d * c
        odd = -(p + m) * (p + q + m) * y / ((p + 2 * m) * (p + 2 * m + 1.0))
        d = 1.0 / guard(1.0 + odd * d)
        c = guard(1.0 + odd / c)
        step = d * c
        fraction = fraction * step
        if m % 10 == 0 and bool(((step - 1.0).abs() < 1e-15).all()):
            break
    log_front = (
        torch.lgamma(p + q)
        - torch.lgamma(p)
        - torch.lgamma(q)
        + p * torch.log(y.clamp(min=tiny))
        + q * torch.log1p(-y.clamp(max=1.0))
    )
    part = torch.exp(log_front) * fraction / p
    part = torch.where(y > 0, part, 0.0)
    return torch.where(flip, 1.0 - part, part)


def _student_p_value(t: Tensor, df: Tensor) -> Tensor:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom."""
    t, df = t.double(), df.double()
    p = _betainc(df / 2.0, torch.full_like(df, 0.5), df / (df + t * t))
    normal = torch.special.erfc(t.abs() / math.sqrt(2.0))
    return torch.where(torch.isinf(df), normal, p)


def _student_critical(confidence: float, df: Tensor) -> Tensor:
    """Two-sided critical value of Student's t: ``P(|T| >= q) = 1 - confidence`` (``df >= 1``).

    Started from the Cornish-Fisher expansion around the normal quantile, refined by Newton
    steps on :func:`_student_p_value`.
    """
    df = df.double()
    z = _normal_quantile(confidence)
    finite = torch.where(torch.isinf(df), 1e12, df)
    q = (
        z
        + (z**3 + z) / (4 * finite)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * finite**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * finite**3)
    )
    log_norm = (
        torch.lgamma((finite + 1) / 2)
        - torch.lgamma(finite / 2)
        - 0.5 * torch.log(finite * math.pi)
    )
    for _ in range(6):
        density = torch.exp(log_norm - (finite + 1) / 2 * torch.log1p(q * q / finite))
        step = (_student_p_value(q, finite) - (1.0 - confidence)) / (2.0 * density)
        q = (q + step).clamp(min=z)
    return torch.where(torch.isinf(df), z, q)


def _satterthwaite(variances: Tensor, groups: Tensor) -> Tensor:
    """Welch-Satterthwaite degrees of freedom of a sum of variance parts.

    Args:
        variances: ``[J, ...]`` parts, each estimated from the reports counted in ``groups``.
        groups: ``[J, ...]`` number of reports behind each part (a part from ``K`` reports has
            ``K - 1`` degrees of freedom).

    Returns:
        ``[...]`` degrees of freedom, at least 1 (infinite when every part is 0).
    """
    freedom = (groups.double() - 1.0).clamp(min=1.0)
    spread = (variances.pow(2) / freedom).sum(dim=0)
    df = variances.sum(dim=0).pow(2) / spread.clamp(min=1e-300)
    return torch.where(spread > 0, df.clamp(min=1.0), math.inf)


def placement_values(preds: Tensor, target: Tensor) -> Tensor:
    """DeLong placement value of every row, per class (ties count 1/2).

    A positive row's value is the share of the class's negatives it outscores, a negative row's
    the share of the class's positives that outscore it; either kind averages to the AUROC. The
    scores are sorted once per class.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.

    Returns:
        Float64 ``[N, C]``; ``NaN`` throughout a class with no positive or no negative.
    """
    scores, order = preds.double().sort(dim=0)
    labels = target.double().gather(0, order)
    columns = scores.t().contiguous()  # [C, N]
    start = torch.searchsorted(columns, columns, side="left").t()  # first row of the tie block
    stop = torch.searchsorted(columns, columns, side="right").t()  # one past its last row
    cum_pos = torch.nn.functional.pad(labels.cumsum(dim=0), (0, 0, 1, 0))  # [N + 1, C]
    cum_neg = torch.nn.functional.pad((1.0 - labels).cumsum(dim=0), (0, 0, 1, 0))
    n_pos, n_neg = cum_pos[-1], cum_neg[-1]
    neg_below, neg_upto = cum_neg.gather(0, start), cum_neg.gather(0, stop)
    pos_below, pos_upto = cum_pos.gather(0, start), cum_pos.gather(0, stop)
    wins = (neg_below + 0.5 * (neg_upto - neg_below)) / n_neg
    losses = (n_pos - pos_upto + 0.5 * (pos_upto - pos_below)) / n_pos
    values = torch.where(labels > 0, wins, losses)
    defined = (n_pos > 0) & (n_neg > 0)
    values = torch.where(defined, values, torch.full_like(values, math.nan))
    return torch.empty_like(values).scatter_(0, order, values)


@dataclass
class AUROCInfluence:
    """Per-class AUROC with its report-clustered DeLong decomposition (:func:`auroc_influence`).

    Attributes:
        auroc: ``[C]`` AUROC (``NaN`` where a class has no positive or no negative row).
        positive_part: ``[G, C]`` each report's share of each class's estimation error through
            its positive rows: their placement values minus the AUROC, summed and divided by
            the class's positives, scaled by ``sqrt(K / (K - 1))`` for the ``K`` reports with a
            positive row. Zero in a class without a defined AUROC.
        negative_part: ``[G, C]`` the same through the report's negative rows.
        row_variance: ``[C]`` DeLong variance treating every row as independent.
        positives: ``[C]`` positive rows.
        negatives: ``[C]`` negative rows.
        positive_groups: ``[C]`` reports with a positive row (``K`` of ``positive_part``).
        negative_groups: ``[C]`` reports with a negative row.
        num_clusters: Number of report groups ``G`` (rows when no groups were given).
    """

    auroc: Tensor
    positive_part: Tensor
    negative_part: Tensor
    row_variance: Tensor
    positives: Tensor
    negatives: Tensor
    positive_groups: Tensor
    negative_groups: Tensor
    num_clusters: int

    @property
    def influence(self) -> Tensor:
        """``[G, C]`` each report's influence, ``positive_part + negative_part``.

        ``influence.T @ influence`` is the clustered covariance of the AUROC estimates:
        Obuchowski's (1997) estimator, with ``sqrt(K1 K2 / ((K1 - 1) (K2 - 1)))`` as the
        small-sample factor of its positive-negative cross term (``K / (K - 1)`` there); with
        one row per report it is DeLong et al.'s (1988) variance.
        """
        return self.positive_part + self.negative_part

    @property
    def variance(self) -> Tensor:
        """``[C]`` clustered DeLong variance of each class's AUROC."""
        return self.influence.pow(2).sum(dim=0)

    def design_effect(self) -> Tensor:
        """``[C]`` how much the report groups inflate each class's variance (at least 1).

        The clustered DeLong variance over the one that treats rows as independent. Where the
        latter is 0 (every placement value equals the AUROC, as under perfect separation) the
        ratio is unknown and the rows per report on average are used, the design effect of
        rows that always agree.
        """
        rows = self.positives + self.negatives
        fallback = rows.double() / max(self.num_clusters, 1)
        ratio = self.variance / self.row_variance.clamp(min=torch.finfo(torch.float64).tiny)
        return torch.where(self.row_variance > 0, ratio, fallback).clamp(min=1.0)


def auroc_influence(preds: Tensor, target: Tensor, groups: Tensor | None = None) -> AUROCInfluence:
    """DeLong placement values aggregated per report: AUROC and its clustered covariance.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        groups: Report (cluster) id per row ``[N]`` (any integers); ``None``: one per row.

    Returns:
        The :class:`AUROCInfluence` (float64, on ``preds.device``).

    Raises:
        ValueError: When the shapes do not match.
    """
    if preds.shape != target.shape or preds.ndim != 2:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [N, C]."
        )
    num_rows, num_classes = preds.shape
    clusters = _cluster_ids(groups, num_rows, preds.device)
    num_clusters = int(clusters.max()) + 1 if num_rows else 0
    values = placement_values(preds, target)
    labels = target.to(preds.device).double()
    n_pos = labels.sum(dim=0)
    n_neg = num_rows - n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    auc = torch.where(
        defined, (values * labels).nan_to_num().sum(dim=0) / n_pos.clamp(min=1), math.nan
    )
    deviation = torch.where(defined, values - auc, 0.0)
    part_pos = labels * deviation / n_pos.clamp(min=1)
    part_neg = (1.0 - labels) * deviation / n_neg.clamp(min=1)
    zeros = torch.zeros(num_clusters, num_classes, dtype=torch.float64, device=preds.device)
    with_pos = (zeros.index_add(0, clusters, labels) > 0).sum(dim=0)
    with_neg = (zeros.index_add(0, clusters, 1.0 - labels) > 0).sum(dim=0)

    def small_sample(count: Tensor) -> Tensor:  # K / (K - 1), 1 where K <= 1
        count = count.double()
        return torch.where(count > 1, count / (count - 1).clamp(min=1), 1.0)

    row_variance = part_pos.pow(2).sum(dim=0) * small_sample(n_pos)
    row_variance += part_neg.pow(2).sum(dim=0) * small_sample(n_neg)
    return AUROCInfluence(
        auroc=auc,
        positive_part=zeros.index_add(0, clusters, part_pos) * small_sample(with_pos).sqrt(),
        negative_part=zeros.index_add(0, clusters, part_neg) * small_sample(with_neg).sqrt(),
        row_variance=row_variance,
        positives=n_pos.long(),
        negatives=n_neg.long(),
        positive_groups=with_pos.long(),
        negative_groups=with_neg.long(),
        num_clusters=num_clusters,
    )


def newcombe_variance(auroc: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Newcombe's (2006) variance of the Mann-Whitney AUROC, as a function of the AUROC.

    Hanley and McNeil's (1982) variance with both ``m - 1`` and ``n - 1`` replaced by
    ``N* - 1 = (m + n) / 2 - 1``:
    ``θ (1 - θ) [1 + (N* - 1) ((1 - θ) / (2 - θ) + θ / (1 + θ))] / (m n)``.

    Args:
        auroc: AUROC ``θ`` (any shape).
        positives: Positives ``m`` (broadcast with ``auroc``).
        negatives: Negatives ``n``.

    Returns:
        The variance, float64.
    """
    theta = auroc.double()
    m, n = positives.double(), negatives.double()
    star = (m + n) / 2.0 - 1.0
    shape = 1.0 + star * ((1.0 - theta) / (2.0 - theta) + theta / (1.0 + theta))
    return theta * (1.0 - theta) * shape / (m * n)


def _score_bounds(
    estimate: Tensor, effect: Tensor, positives: Tensor, negatives: Tensor, z: float
) -> Tensor:
    """``[2, C]``: the AUROCs ``t`` with ``(estimate - t) ** 2 = z ** 2 effect V(t)``.

    ``V`` is :func:`newcombe_variance`. One root lies below the estimate, one above (``V`` is 0
    at 0 and 1); both are found together by 48 bisection steps (to about ``4e-15``).
    """
    theta = estimate.double()
    scale = z**2 * effect.double() / (positives.double() * negatives.double())
    star = (positives.double() + negatives.double()) / 2.0 - 1.0
    low = torch.stack([torch.zeros_like(theta), theta])  # row 0: below the estimate
    high = torch.stack([theta, torch.ones_like(theta)])  # row 1: above it
    above = torch.tensor([[False], [True]], device=theta.device)
    for _ in range(48):
        mid = (low + high) / 2
        shape = 1.0 + star * ((1.0 - mid) / (2.0 - mid) + mid / (1.0 + mid))
        outside = (theta - mid).pow(2) > scale * mid * (1.0 - mid) * shape
        move_low = outside ^ above  # below: a point outside lies under the root
        low = torch.where(move_low, mid, low)
        high = torch.where(move_low, high, mid)
    return (low + high) / 2


def _rescaling(influence: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Factors that give influence columns the given variances, and what they cannot carry.

    With ``scaled = influence * scale``, ``scaled.T @ scaled + diag(independent)`` is the
    covariance ``D R D``: ``R`` the correlations of the influence values, ``D`` the given
    standard deviations. A column without influence (DeLong variance 0, e.g. under perfect
    separation) counts as independent of the others with its given variance.

    Args:
        influence: ``[G, M]`` influence values of ``M`` estimates.
        variances: ``[M]`` their variances.

    Returns:
        ``scale [M]`` and ``independent [M]``.
    """
    spread = influence.pow(2).sum(dim=0).sqrt()
    has_influence = spread > 0
    scale = torch.where(has_influence, variances.sqrt() / spread.clamp(min=1e-300), 0.0)
    return scale, torch.where(has_influence, 0.0, variances)


def _logit_interval(estimate: Tensor, variance: Tensor, z: float) -> Tensor:
    """``[2]`` Wald interval on the logit scale (the estimate itself when the variance is 0)."""
    if float(variance) <= 0.0 or not 0.0 < float(estimate) < 1.0:
        return torch.stack([estimate, estimate]).double()
    half = z * variance.sqrt() / (estimate * (1.0 - estimate))
    centre = torch.log(estimate) - torch.log1p(-estimate)
    return torch.sigmoid(torch.stack([centre - half, centre + half])).double()


@dataclass
class AUROCIntervals:
    """Result of :func:`auroc_intervals`.

    Attributes:
        auroc: ``[C]`` AUROC (``NaN`` where undefined).
        class_ci: ``[2, C]`` lower/upper bounds per class (``NaN`` outside ``classes``).
        mean: Macro mean AUROC over ``classes`` (``NaN`` if the set is empty).
        mean_ci: ``[2]`` lower/upper bounds of the macro mean.
        classes: ``[C]`` bool, the fixed class set.
        design_effect: ``[C]`` variance inflation by the report groups (see
            :meth:`AUROCInfluence.design_effect`).
        num_clusters: Number of report groups (rows when no groups were given).
    """

    auroc: Tensor
    class_ci: Tensor
    mean: float
    mean_ci: Tensor
    classes: Tensor
    design_effect: Tensor
    num_clusters: int


def _class_variances(influence: AUROCInfluence) -> tuple[Tensor, Tensor]:
    """Design effects and the variances ``deff * newcombe_variance(AUROC)`` per class."""
    effect = influence.design_effect()
    return effect, effect * newcombe_variance(
        influence.auroc, influence.positives, influence.negatives
    )


def auroc_intervals(
    preds: Tensor,
    target: Tensor,
    groups: Tensor | None = None,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> AUROCIntervals:
    """Per-class and macro AUROC intervals: Newcombe score intervals, report-clustered.

    Per class, the interval holds every AUROC ``θ`` with
    ``(AUROC - θ) ** 2 <= z ** 2 * deff * V(θ)``, where ``V`` is :func:`newcombe_variance` and
    ``deff`` the design effect of the report groups (:meth:`AUROCInfluence.design_effect`): an
    asymmetric interval inside [0, 1], not empty when the AUROC is 1. The macro mean over the
    fixed class set gets a Wald interval on the logit scale, its variance from the classes'
    variances ``deff * V(AUROC)`` and their clustered DeLong correlations. Both are computed
    only when the fixed class set (:func:`ci_classes`, counting reports when ``groups`` are
    given) is not empty; the simulations behind the defaults are in ``docs/intervals.md``.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        groups: Report (cluster) id per row ``[N]`` (any integers), or ``None`` for rows.
        confidence: Two-sided confidence level in (0, 1).
        min_positives: Fewest positive and negative reports (rows without ``groups``) of a
            class in the fixed set.

    Returns:
        The intervals, the fixed class set and the design effects.
    """
    _check_confidence(confidence)
    influence = auroc_influence(preds, target, groups)
    classes = ci_classes(target, min_positives, groups).to(influence.auroc.device)
    z = _normal_quantile(confidence)
    effect, variances = _class_variances(influence)
    bounds = _score_bounds(
        influence.auroc.nan_to_num(0.5), effect, influence.positives, influence.negatives, z
    )
    class_ci = torch.where(classes, bounds, math.nan)
    mean = math.nan
    mean_ci = torch.full((2,), math.nan, dtype=torch.float64, device=class_ci.device)
    if bool(classes.any()):
        fixed = classes.nonzero().flatten()
        estimate = influence.auroc[fixed].mean()
        scale, independent = _rescaling(influence.influence[:, fixed], variances[fixed])
        scaled = influence.influence[:, fixed] * scale
        count = fixed.numel()
        mean_variance = scaled.mean(dim=1).pow(2).sum() + independent.sum() / count**2
        mean, mean_ci = float(estimate), _logit_interval(estimate, mean_variance, z)
    return AUROCIntervals(
        auroc=influence.auroc,
        class_ci=class_ci,
        mean=mean,
        mean_ci=mean_ci,
        classes=classes,
        design_effect=effect,
        num_clusters=influence.num_clusters,
    )


def _fmt_signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.4f}"


def _fmt_p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


@dataclass
class Comparison:
    """Paired AUROC difference of two models scored on the same rows (:func:`compare`).

    Attributes:
        label_names: Class names, length ``C``.
        names: Names of the two models, ``(A, B)``.
        auroc_a: Per-class AUROC of A (``NaN`` = undefined).
        auroc_b: Per-class AUROC of B.
        difference: Per-class ``A - B``.
        ci_low: Per-class lower bound of the difference (``NaN`` outside the fixed set).
        ci_high: Per-class upper bound.
        p_value: Per-class two-sided p-value of "no difference" (``NaN`` outside the set).
        positives: Positive rows per class.
        negatives: Negative rows per class.
        in_mean: Per class, whether it belongs to the fixed set.
        mean_a: Macro mean AUROC of A over the fixed set.
        mean_b: Macro mean AUROC of B over the fixed set.
        mean_difference: ``mean_a - mean_b``.
        mean_ci: ``(low, high)`` of the macro difference.
        mean_p_value: Two-sided p-value of the macro difference.
        confidence: Confidence level of the intervals.
        min_positives: Fewest positives (and negatives) of a class in the fixed set.
        counts: What ``min_positives`` counted: ``"reports"`` (with groups) or ``"rows"``.
        num_clusters: Report groups (rows when no groups were given).
        notes: Per-class note: empty, ``undefined: ...`` or ``fewer than k ...``.
    """

    label_names: list[str]
    names: tuple[str, str]
    auroc_a: list[float]
    auroc_b: list[float]
    difference: list[float]
    ci_low: list[float]
    ci_high: list[float]
    p_value: list[float]
    positives: list[int]
    negatives: list[int]
    in_mean: list[bool]
    mean_a: float
    mean_b: float
    mean_difference: float
    mean_ci: tuple[float, float]
    mean_p_value: float
    confidence: float
    min_positives: int
    counts: Literal["rows", "reports"]
    num_clusters: int
    notes: list[str]

    def rows(self) -> list[dict[str, str | int | float]]:
        """Return the per-class rows and a final ``mean`` row (the macro difference) as dicts."""
        rows: list[dict[str, str | int | float]] = [
            {
                "label": name,
                "auroc_a": self.auroc_a[i],
                "auroc_b": self.auroc_b[i],
                "difference": self.difference[i],
                "ci_low": self.ci_low[i],
                "ci_high": self.ci_high[i],
                "p_value": self.p_value[i],
                "positives": self.positives[i],
                "negatives": self.negatives[i],
                "note": self.notes[i],
            }
            for i, name in enumerate(self.label_names)
        ]
        unit = (
            "positive and negative reports"
            if self.counts == "reports"
            else ("positives and negatives")
        )
        rows.append(
            {
                "label": "mean",
                "auroc_a": self.mean_a,
                "auroc_b": self.mean_b,
                "difference": self.mean_difference,
                "ci_low": self.mean_ci[0],
                "ci_high": self.mean_ci[1],
                "p_value": self.mean_p_value,
                "positives": sum(self.positives),
                "negatives": sum(self.negatives),
                "note": f"macro mean over the {sum(self.in_mean)} classes with >= "
                f"{self.min_positives} {unit}; {self.num_clusters} report groups",
            }
        )
        return rows

    def table(self) -> str:
        """Render the rows as a Markdown table (with :func:`markdown_table`)."""
        a, b = self.names
        pct = round(self.confidence * 100)
        header = [
            "label",
            f"AUROC {a}",
            f"AUROC {b}",
            f"{a} - {b}",
            f"{pct}% CI",
            "p-value",
            "positives",
            "note",
        ]
        lines = []
        for row in self.rows():
            low, high = float(row["ci_low"]), float(row["ci_high"])
            ci = "n/a" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"
            lines.append(
                [
                    row["label"],
                    _fmt(float(row["auroc_a"])),
                    _fmt(float(row["auroc_b"])),
                    _fmt_signed(float(row["difference"])),
                    ci,
                    _fmt_p(float(row["p_value"])),
                    row["positives"],
                    row["note"],
                ]
            )
        return markdown_table(header, lines)


def _p_value(difference: Tensor, variance: Tensor, df: Tensor) -> Tensor:
    """Two-sided Student-t p-value; 1 for no difference, 0 for a difference without variance."""
    se = variance.clamp(min=0).sqrt()
    p = _student_p_value(difference / se.clamp(min=1e-300), df)
    p = torch.where(se > 0, p, (difference == 0).double())
    return torch.where(difference.isnan(), math.nan, p)


def _class_notes(
    positives: Tensor, negatives: Tensor, fixed: Tensor, min_positives: int, unit: str
) -> list[str]:
    notes = []
    for pos, neg, keep in zip(positives.tolist(), negatives.tolist(), fixed.tolist(), strict=True):
        if pos == 0 or neg == 0:
            notes.append("undefined: no " + ("positives" if pos == 0 else "negatives"))
        elif not keep:
            notes.append(f"fewer than {min_positives} {unit}: no CI, not in mean")
        else:
            notes.append("")
    return notes


def compare(
    preds_a: Tensor,
    preds_b: Tensor,
    target: Tensor,
    groups: Tensor | None = None,
    label_names: Sequence[str] | None = None,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Paired difference ``A - B`` of per-class and macro AUROC, with intervals and p-values.

    Both models are scored on the same rows, so their errors are correlated and the difference
    is much more precise than either AUROC. Each model's per-class variance is the one of
    :func:`auroc_intervals` (Newcombe's variance at the AUROC times the design effect of the
    report groups); the correlations between the two models' estimates, and between classes for
    the macro mean, are those of their DeLong placement values summed per report (the same
    report groups for both). The interval is ``difference ± t se`` and the p-value the
    two-sided one of "no difference", both from Student's t with Welch-Satterthwaite degrees of
    freedom: the variance of the difference is estimated from its parts through the positive
    and through the negative reports, each with one degree of freedom less than it has reports,
    so a class with 5 positive reports gets about 4 (the normal quantile under-covered there,
    87-90 % instead of 95 %, in the simulation of ``docs/intervals.md``). A model compared with
    itself gets a difference of 0, a zero-width interval and p = 1. Intervals and p-values are
    given for the fixed class set of :func:`ci_classes` (reports counted when ``groups`` are
    given), whose mean is the macro difference.

    Args:
        preds_a: Scores of model A ``[N, C]``.
        preds_b: Scores of model B on the same rows ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        groups: Report (cluster) id per row ``[N]``, or ``None`` for rows.
        label_names: ``C`` class names (default ``class_<i>``).
        confidence: Two-sided confidence level in (0, 1).
        min_positives: Fewest positive and negative reports (rows without ``groups``) of a
            class in the fixed set.
        names: Names of the two models for the table.

    Returns:
        The :class:`Comparison`.

    Raises:
        ValueError: When the shapes or names do not match, or for a bad ``confidence``.
    """
    if preds_a.shape != target.shape or preds_b.shape != target.shape or target.ndim != 2:
        raise ValueError(
            f"preds_a {tuple(preds_a.shape)}, preds_b {tuple(preds_b.shape)} and target "
            f"{tuple(target.shape)} must all be [N, C] (the same rows and classes)."
        )
    num_classes = target.shape[1]
    labels = (
        list(label_names) if label_names is not None else [f"class_{i}" for i in range(num_classes)]
    )
    if len(labels) != num_classes:
        raise ValueError(f"label_names has {len(labels)} names for {num_classes} classes.")
    _check_confidence(confidence)
    model_a = auroc_influence(preds_a, target, groups)
    model_b = auroc_influence(preds_b.to(preds_a.device), target, groups)
    fixed = ci_classes(target, min_positives, groups).to(model_a.auroc.device)
    positive_parts, negative_parts, loose = [], [], torch.zeros_like(model_a.auroc)
    for model in (model_a, model_b):
        _, variances = _class_variances(model)
        scale, independent = _rescaling(model.influence, variances.nan_to_num(0.0))
        positive_parts.append(model.positive_part * scale)
        negative_parts.append(model.negative_part * scale)
        loose = loose + independent
    positive = positive_parts[0] - positive_parts[1]  # [G, C], exactly 0 where A and B agree
    negative = negative_parts[0] - negative_parts[1]
    groups_per_part = torch.stack([model_a.positive_groups, model_a.negative_groups])
    difference = model_a.auroc - model_b.auroc
    variance = (positive + negative).pow(2).sum(dim=0) + loose
    parts = torch.stack([positive.pow(2).sum(dim=0), negative.pow(2).sum(dim=0)])
    df = _satterthwaite(parts, groups_per_part)
    half = _student_critical(confidence, df) * variance.sqrt()
    nan = torch.full_like(difference, math.nan)
    low = torch.where(fixed, (difference - half).clamp(min=-1.0), nan)
    high = torch.where(fixed, (difference + half).clamp(max=1.0), nan)
    p_value = torch.where(fixed, _p_value(difference, variance, df), nan)
    mean_a = mean_b = mean_difference = mean_p = math.nan
    mean_ci = (math.nan, math.nan)
    if bool(fixed.any()):
        weights = fixed.double() / int(fixed.sum())
        mean_a = float((model_a.auroc.nan_to_num(0.0) * weights).sum())
        mean_b = float((model_b.auroc.nan_to_num(0.0) * weights).sum())
        delta = (difference.nan_to_num(0.0) * weights).sum()
        spread = ((positive + negative) @ weights).pow(2).sum() + (loose * weights.pow(2)).sum()
        part_spread = torch.cat([(positive * weights).pow(2), (negative * weights).pow(2)], 1)
        mean_df = _satterthwaite(part_spread.sum(dim=0), groups_per_part.flatten())
        margin = float(_student_critical(confidence, mean_df) * spread.sqrt())
        mean_difference = float(delta)
        mean_ci = (max(-1.0, mean_difference - margin), min(1.0, mean_difference + margin))
        mean_p = float(_p_value(delta, spread, mean_df))
    counts: Literal["rows", "reports"] = "rows" if groups is None else "reports"
    positives, negatives = model_a.positives.cpu(), model_a.negatives.cpu()
    unit = "positive or negative reports" if groups is not None else "positives or negatives"
    return Comparison(
        label_names=labels,
        names=(str(names[0]), str(names[1])),
        auroc_a=[float(v) for v in model_a.auroc.tolist()],
        auroc_b=[float(v) for v in model_b.auroc.tolist()],
        difference=[float(v) for v in difference.tolist()],
        ci_low=[float(v) for v in low.tolist()],
        ci_high=[float(v) for v in high.tolist()],
        p_value=[float(v) for v in p_value.tolist()],
        positives=[int(v) for v in positives.tolist()],
        negatives=[int(v) for v in negatives.tolist()],
        in_mean=[bool(v) for v in fixed.tolist()],
        mean_a=mean_a,
        mean_b=mean_b,
        mean_difference=mean_difference,
        mean_ci=mean_ci,
        mean_p_value=mean_p,
        confidence=confidence,
        min_positives=min_positives,
        counts=counts,
        num_clusters=model_a.num_clusters,
        notes=_class_notes(positives, negatives, fixed.cpu(), min_positives, unit),
    )


@dataclass
class AUROCReport:
    """AUROC results for one evaluated set.

    Attributes:
        label_names: Class names, length ``C``.
        auroc: Per-class AUROC (``NaN`` = undefined), length ``C``.
        mean: Macro mean over the fixed class set ``in_mean`` (``NaN`` if it is empty).
        mean_all_defined: Macro mean over every class with a defined AUROC (the number papers
            usually report; no interval, since classes with few positives have no reliable one).
        positives: Positive count per class.
        negatives: Negative count per class.
        in_mean: Per class, whether it belongs to the fixed set (enough positives and negatives).
        ci_low: Per-class lower CI bound (``NaN`` when not computed), length ``C``.
        ci_high: Per-class upper CI bound.
        mean_ci: ``(low, high)`` of the macro mean.
        confidence: Confidence level of the intervals, e.g. 0.95.
        min_positives: Fewest positives (and negatives) of a class in the fixed set.
        num_clusters: Report groups the intervals account for (rows when no groups were
            given; 0 = no intervals).
        dropped_resamples: Resamples left out of the macro interval (``method="bootstrap"``
            only, see :func:`bootstrap_auroc`).
        notes: Per-class note: empty, ``undefined: ...`` or ``fewer than k positives ...``.
        method: How the intervals were computed (:data:`IntervalMethod`).
        counts: What ``min_positives`` counted: ``"reports"`` (report groups given, Newcombe
            intervals) or ``"rows"``.
    """

    label_names: list[str]
    auroc: list[float]
    mean: float
    positives: list[int]
    negatives: list[int]
    in_mean: list[bool] = field(default_factory=list)
    ci_low: list[float] = field(default_factory=list)
    ci_high: list[float] = field(default_factory=list)
    mean_ci: tuple[float, float] = (math.nan, math.nan)
    mean_all_defined: float = math.nan
    confidence: float = 0.95
    min_positives: int = DEFAULT_MIN_POSITIVES
    num_clusters: int = 0
    dropped_resamples: int = 0
    notes: list[str] = field(default_factory=list)
    method: IntervalMethod = "newcombe"
    counts: Literal["rows", "reports"] = "rows"

    def rows(self) -> list[dict[str, str | int | float]]:
        """Return the per-class table (plus a final ``mean`` row) as a list of dicts."""
        rows: list[dict[str, str | int | float]] = []
        for i, name in enumerate(self.label_names):
            rows.append(
                {
                    "label": name,
                    "auroc": self.auroc[i],
                    "ci_low": self.ci_low[i] if self.ci_low else math.nan,
                    "ci_high": self.ci_high[i] if self.ci_high else math.nan,
                    "positives": self.positives[i],
                    "negatives": self.negatives[i],
                    "note": self.notes[i] if self.notes else "",
                }
            )
        count = sum(self.in_mean)
        unit = (
            "positive and negative reports"
            if self.counts == "reports"
            else ("positives and negatives")
        )
        note = f"macro mean over the {count} classes with >= {self.min_positives} {unit}"
        if self.num_clusters and self.method == "bootstrap":
            note += f"; bootstrap over {self.num_clusters} report groups"
        elif self.num_clusters:
            note += f"; Newcombe intervals over {self.num_clusters} report groups"
        if self.dropped_resamples:
            note += f"; {self.dropped_resamples} resamples without a class dropped"
        rows.append(
            {
                "label": "mean",
                "auroc": self.mean,
                "ci_low": self.mean_ci[0],
                "ci_high": self.mean_ci[1],
                "positives": sum(self.positives),
                "negatives": sum(self.negatives),
                "note": note,
            }
        )
        defined = sum(not math.isnan(value) for value in self.auroc)
        rows.append(
            {
                "label": "mean (all defined)",
                "auroc": self.mean_all_defined,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "positives": sum(self.positives),
                "negatives": sum(self.negatives),
                "note": f"macro mean over the {defined} classes with a defined AUROC; no CI",
            }
        )
        return rows


def auroc_report(
    preds: Tensor,
    target: Tensor,
    label_names: Sequence[str],
    per_class: Tensor | None = None,
    groups: Tensor | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    method: IntervalMethod = "newcombe",
) -> AUROCReport:
    """Build the AUROC table with counts, the fixed-set macro mean and intervals.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        label_names: ``C`` class names.
        per_class: Precomputed per-class AUROC (e.g. from torchmetrics); computed by
            :func:`per_class_auroc` when ``None``.
        groups: Report (cluster) id per row ``[N]``; ``None`` = every row its own report.
        num_resamples: 0 disables the intervals; otherwise the number of bootstrap resamples
            of ``method="bootstrap"`` (the default Newcombe intervals draw none).
        seed: Bootstrap seed (``method="bootstrap"``).
        confidence: Confidence level of the intervals.
        min_positives: A class needs this many positives and negatives to be in the macro mean
            and to get an interval (1 = every class with a defined AUROC, no interval rule).
            With ``groups`` and the Newcombe intervals, positive and negative *reports* are
            counted; the bootstrap counts rows, as it always did.
        method: ``"newcombe"`` (:func:`auroc_intervals`, report-clustered Newcombe score
            intervals; covers as stated from 5 positive reports on) or ``"bootstrap"``
            (:func:`bootstrap_auroc`, the cluster percentile bootstrap, which under-covers below
            about 40 positives; see ``docs/intervals.md``).

    Returns:
        The filled :class:`AUROCReport`.
    """
    if preds.shape != target.shape or preds.ndim != 2 or preds.shape[1] != len(label_names):
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [N, C] with "
            f"C = len(label_names) = {len(label_names)}; pass matching label_names."
        )
    if method not in get_args(IntervalMethod):
        raise ValueError(f"method={method!r}; use 'newcombe' or 'bootstrap'.")
    target = target.long()
    undefined = undefined_classes(target)
    if per_class is None:
        per_class = per_class_auroc(preds, target)
    per_class = torch.where(
        undefined.to(per_class.device), torch.full_like(per_class, math.nan), per_class
    )
    positives = target.sum(dim=0)
    negatives = target.shape[0] - positives
    by_report = groups is not None and method == "newcombe"
    fixed = ci_classes(target, min_positives, groups if by_report else None)
    mean = (
        float(per_class[fixed.to(per_class.device)].double().mean())
        if bool(fixed.any())
        else math.nan
    )
    unit = "positive or negative reports" if by_report else "positives or negatives"
    report = AUROCReport(
        label_names=list(label_names),
        auroc=[float(v) for v in per_class.tolist()],
        mean=mean,
        mean_all_defined=(
            float(per_class[~undefined.to(per_class.device)].double().mean())
            if bool((~undefined).any())
            else math.nan
        ),
        positives=[int(v) for v in positives.tolist()],
        negatives=[int(v) for v in negatives.tolist()],
        in_mean=[bool(v) for v in fixed.tolist()],
        ci_low=[math.nan] * len(label_names),
        ci_high=[math.nan] * len(label_names),
        confidence=confidence,
        min_positives=min_positives,
        notes=_class_notes(positives.cpu(), negatives.cpu(), fixed.cpu(), min_positives, unit),
        method=method,
        counts="reports" if by_report else "rows",
    )
    if num_resamples <= 0 or preds.shape[0] == 0:
        return report
    if method == "bootstrap":
        boot = bootstrap_auroc(
            preds, target, groups, num_resamples, seed, confidence, min_positives
        )
        class_ci, mean_ci = boot.class_ci, boot.mean_ci
        report.num_clusters, report.dropped_resamples = boot.num_clusters, boot.dropped_resamples
    else:
        ci = auroc_intervals(preds, target, groups, confidence, min_positives)
        class_ci, mean_ci, report.num_clusters = ci.class_ci, ci.mean_ci, ci.num_clusters
    report.ci_low = [float(v) for v in class_ci[0].tolist()]
    report.ci_high = [float(v) for v in class_ci[1].tolist()]
    report.mean_ci = (float(mean_ci[0]), float(mean_ci[1]))
    return report


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    align: Sequence[Literal["left", "right"]] | None = None,
) -> str:
    """Render a table as Markdown: a header row, a rule, one line per row.

    Every table the library prints or writes goes through this function.

    Args:
        header: Column names.
        rows: Rows of cells, one cell per column (rendered with ``str``; ``|`` is escaped).
        align: Per column ``"left"`` or ``"right"``: cells are padded to the column's width and
            the rule carries the alignment (``---:`` for right). ``None`` (default): no padding,
            plain ``---`` rules.

    Returns:
        The table's lines joined by newlines (no trailing newline).

    Raises:
        ValueError: When a row or ``align`` does not have one entry per column.

    Examples:
        >>> print(markdown_table(["name", "n"], [["a", 1], ["bb", 22]]))
        | name | n |
        |---|---|
        | a | 1 |
        | bb | 22 |
        >>> print(markdown_table(["name", "n"], [["a", 1], ["bb", 22]], ["left", "right"]))
        | name |  n |
        |------|---:|
        | a    |  1 |
        | bb   | 22 |
    """
    columns = len(header)
    cells = [[str(cell).replace("|", "\\|") for cell in header]]
    for row in rows:
        if len(row) != columns:
            raise ValueError(f"every row needs {columns} cells (one per column), got {list(row)}.")
        cells.append([str(cell).replace("|", "\\|") for cell in row])
    if align is None:
        rule = "|" + "---|" * columns
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join([lines[0], rule, *lines[1:]])
    if len(align) != columns:
        raise ValueError(f"align needs {columns} entries (one per column), got {list(align)}.")
    widths = [max(len(line[i]) for line in cells) for i in range(columns)]

    def padded(line: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if side == "right" else cell.ljust(width)
                for cell, width, side in zip(line, widths, align, strict=True)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if side == "right" else "-" * (width + 2)
            for width, side in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([padded(cells[0]), rule, *(padded(line) for line in cells[1:])])


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def format_markdown_table(report: AUROCReport) -> str:
    """Render an :class:`AUROCReport` as a Markdown table (undefined values shown as ``n/a``)."""
    pct = round(report.confidence * 100)
    header = ["label", "AUROC", f"{pct}% CI", "positives", "negatives", "note"]
    lines = []
    for row in report.rows():
        low, high = float(row["ci_low"]), float(row["ci_high"])
        ci = "n/a" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]"
        lines.append(
            [
                row["label"],
                _fmt(float(row["auroc"])),
                ci,
                row["positives"],
                row["negatives"],
                row["note"],
            ]
        )
    return markdown_table(header, lines)


def plot_roc_curves(preds: Tensor, target: Tensor, report: AUROCReport, path: str | Path) -> None:
    """Write the ROC curve of every class with a defined AUROC to a PNG file.

    Curves come from torchmetrics' ``MultilabelROC``; the legend gives each class's AUROC and
    the title the report's macro mean. Colours come from the 20-colour ``tab20`` map and line
    styles cycle, so 14 classes stay distinguishable.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        report: The :class:`AUROCReport` of the same rows (names, AUROCs, macro mean).
        path: PNG file to write.

    Raises:
        InputError: Without matplotlib (the ``plots`` extra).
    """
    require("plots", "ROC curves")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.classification import MultilabelROC

    defined = [c for c, value in enumerate(report.auroc) if not math.isnan(value)]
    fig, ax = plt.subplots(figsize=(7, 7))
    if defined:
        roc = MultilabelROC(num_labels=len(defined))
        fpr, tpr, thresholds = roc(preds[:, defined].float().cpu(), target[:, defined].long().cpu())
        ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i % 20) for i in range(len(defined))])
        roc.plot(
            (fpr, tpr, thresholds),
            ax=ax,
            labels=[f"{report.label_names[c]} ({report.auroc[c]:.3f})" for c in defined],
        )
        styles: tuple[Any, ...] = ("-", "--", "-.", ":")
        for i, line in enumerate(ax.get_lines()):
            line.set_linestyle(styles[i % len(styles)])
            line.set_linewidth(1.2)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=(0, (1, 3)), lw=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC, macro mean AUROC {report.mean:.4f} ({sum(report.in_mean)} classes)",
    )
    ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Operating points: thresholds, metrics at thresholds, calibration
# ---------------------------------------------------------------------------------------------


def select_thresholds(
    probs: Tensor,
    target: Tensor,
    method: ThresholdMethod = "f1",
    target_sensitivity: float = 0.9,
    default: float = 0.5,
) -> Tensor:
    """Choose one decision threshold per class.

    ``method="f1"`` takes the threshold with maximal F1 (torchmetrics'
    ``binary_precision_recall_curve``); ``method="sensitivity"`` the highest threshold whose
    sensitivity reaches ``target_sensitivity``, i.e. the one with the best specificity
    (torchmetrics' ``binary_specificity_at_sensitivity``). A class without positives or without
    negatives keeps ``default``, as does a class whose target sensitivity cannot be reached.

    Args:
        probs: ``[N, C]`` probabilities.
        target: ``[N, C]`` 0/1 labels.
        method: ``"f1"`` or ``"sensitivity"``.
        target_sensitivity: Minimal sensitivity for ``method="sensitivity"``, in ``(0, 1]``.
        default: Threshold of the classes the data cannot decide.

    Returns:
        ``[C]`` thresholds (float32, CPU).

    Raises:
        ValueError: For an unknown ``method`` or a ``target_sensitivity`` outside ``(0, 1]``.
    """
    if method not in get_args(ThresholdMethod):
        raise ValueError(f"method={method!r}; use 'f1' or 'sensitivity'.")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}.")
    probs, target = probs.float().cpu(), target.long().cpu()
    thresholds = torch.full((probs.shape[1],), float(default))
    for c in (~undefined_classes(target)).nonzero().flatten().tolist():
        if method == "sensitivity":
            _, found = binary_specificity_at_sensitivity(
                probs[:, c], target[:, c], target_sensitivity
            )
            if math.isfinite(float(found)):
                thresholds[c] = float(found)
            continue
        precision, recall, cuts = binary_precision_recall_curve(probs[:, c], target[:, c])
        f1 = 2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]).clamp(min=1e-12)
        thresholds[c] = float(cuts[int(f1.argmax())])
    return thresholds


def threshold_metrics(
    probs: Tensor, target: Tensor, thresholds: Tensor, n_bins: int = 15
) -> dict[str, Tensor]:
    """Sensitivity, specificity, F1 at per-class thresholds, and calibration error per class.

    The expected calibration error (ECE) is torchmetrics' ``binary_calibration_error`` with
    ``n_bins`` equal-width bins.

    Args:
        probs: ``[N, C]`` probabilities.
        target: ``[N, C]`` 0/1 labels.
        thresholds: ``[C]`` thresholds; a probability at or above its class's threshold is a
            positive decision.
        n_bins: Bins of the expected calibration error.

    Returns:
        ``{"sensitivity", "specificity", "f1", "ece"}``: ``[C]`` tensors (NaN where a class
        has no positives, resp. no negatives), plus ``"ece_all"``: the ECE over all labels
        pooled (scalar).
    """
    probs, target = probs.float().cpu(), target.long().cpu()
    num = probs.shape[1]
    decisions = (probs >= thresholds.cpu()[None, :]).float()
    positives = target.sum(0)
    negatives = target.shape[0] - positives
    nan = torch.tensor(math.nan)
    sensitivity = multilabel_recall(decisions, target, num, average=None, zero_division=0)
    specificity = multilabel_specificity(decisions, target, num, average=None)
    f1 = multilabel_f1_score(decisions, target, num, average=None, zero_division=0)
    ece = torch.stack(
        [
            binary_calibration_error(
                probs[:, c].contiguous(), target[:, c].contiguous(), n_bins=n_bins
            )
            for c in range(num)
        ]
    )
    return {
        "sensitivity": torch.where(positives > 0, sensitivity, nan),
        "specificity": torch.where(negatives > 0, specificity, nan),
        "f1": torch.where(positives > 0, f1, nan),
        "ece": ece,
        "ece_all": binary_calibration_error(probs.flatten(), target.flatten(), n_bins=n_bins),
    }


def threshold_rows(
    label_names: Sequence[str],
    thresholds: Tensor,
    metrics: Mapping[str, Tensor],
    target: Tensor,
) -> list[dict[str, str | int]]:
    """The operating-points table: one row per class and a ``mean`` row, values as text.

    Args:
        label_names: ``C`` class names.
        thresholds: ``[C]`` thresholds.
        metrics: The result of :func:`threshold_metrics` at ``thresholds``.
        target: ``[N, C]`` 0/1 labels (for the positive counts).

    Returns:
        Dicts with ``label``, ``threshold``, ``sensitivity``, ``specificity``, ``f1``, ``ece``
        (4 decimals; ``nan`` where undefined) and ``positives``. The ``mean`` row has the macro
        means over the classes where each value is defined, the ECE of all labels pooled, no
        threshold and the total positives.
    """
    target = target.long().cpu()
    rows: list[dict[str, str | int]] = [
        {
            "label": name,
            "threshold": f"{float(thresholds[c]):.4f}",
            "sensitivity": f"{float(metrics['sensitivity'][c]):.4f}",
            "specificity": f"{float(metrics['specificity'][c]):.4f}",
            "f1": f"{float(metrics['f1'][c]):.4f}",
            "ece": f"{float(metrics['ece'][c]):.4f}",
            "positives": int(target[:, c].sum()),
        }
        for c, name in enumerate(label_names)
    ]
    means = {k: float(metrics[k].nanmean()) for k in ("sensitivity", "specificity", "f1")}
    rows.append(
        {
            "label": "mean",
            "threshold": "",
            **{k: f"{value:.4f}" for k, value in means.items()},
            "ece": f"{float(metrics['ece_all']):.4f}",
            "positives": int(target.sum()),
        }
    )
    return rows


def plot_reliability(probs: Tensor, target: Tensor, path: str | Path, n_bins: int = 15) -> None:
    """Write a reliability diagram (all labels pooled) with the ECE in the title (PNG).

    Each of ``n_bins`` equal-width probability bins with predictions is one point: the mean
    predicted probability against the observed positive fraction, annotated with its count.

    Args:
        probs: ``[N, C]`` probabilities.
        target: ``[N, C]`` 0/1 labels.
        path: PNG file to write.
        n_bins: Number of bins (also those of the ECE in the title).

    Raises:
        InputError: Without matplotlib (the ``plots`` extra).
    """
    require("plots", "reliability diagrams")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, y = probs.float().cpu().flatten(), target.float().cpu().flatten()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = torch.bucketize(p, edges[1:-1])
    centres, observed, counts = [], [], []
    for b in range(n_bins):
        chosen = index == b
        if chosen.any():
            centres.append(float(p[chosen].mean()))
            observed.append(float(y[chosen].mean()))
            counts.append(int(chosen.sum()))
    ece = float(binary_calibration_error(p, y.long(), n_bins=n_bins))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.6, label="perfect calibration")
    ax.plot(centres, observed, "o-", label="model")
    for x, yy, n in zip(centres, observed, counts, strict=True):
        ax.annotate(str(n), (x, yy), fontsize=6, textcoords="offset points", xytext=(3, -8))
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive fraction",
        title=f"Reliability (all labels pooled), ECE {ece:.4f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Distributed evaluation: the torchmetrics metric that gathers and de-duplicates rows
# ---------------------------------------------------------------------------------------------


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
