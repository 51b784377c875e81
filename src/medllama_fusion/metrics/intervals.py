"""Per-class and macro AUROC intervals that hold at few positives.

Newcombe's (2006) Mann-Whitney variance as a function of the AUROC, inverted into a score
interval and widened by the design effect of the report groups (DeLong placement values summed
per report, Obuchowski 1997); the macro interval is a Wald interval on the logit scale with the
classes' clustered correlations. The coverage simulation behind it is in ``docs/intervals.md``.
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
    _normal_quantile,
    ci_classes,
)

__all__ = [
    "AUROCInfluence",
    "AUROCIntervals",
    "auroc_influence",
    "auroc_intervals",
    "newcombe_variance",
    "placement_values",
]


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
