"""Multilabel AUROC with undefined-class handling and clustered percentile bootstrap intervals.

Per-class AUROC comes from torchmetrics (exact, accumulated on device and gathered across
processes). Under distributed evaluation the gathered rows are de-duplicated by their dataset row
``index`` (Lightning's ``DistributedSampler`` pads an odd-sized set with repeated rows), so every
sample counts exactly once. A class with no positives or no negatives in the evaluated set has no
AUROC: it is reported as ``NaN``.

Intervals come from a cluster (report-level) percentile bootstrap: whole report groups are drawn
with replacement (rows when no groups are given), because the images of one report share its labels
and text and are not independent. The interval is computed only for a fixed class set, the classes
with at least ``min_positives`` positives and as many negatives in the evaluated set (default
:data:`DEFAULT_MIN_POSITIVES`); the macro mean and its interval average exactly that set in the
full set and in every resample. The others are reported with their point AUROC (when defined) and a
note, never averaged in. Resample AUROCs are computed by the weighted Mann-Whitney formula (ties
count 1/2), vectorised over resamples and classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAUROC
from torchmetrics.functional.classification import multilabel_auroc
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "DEFAULT_MIN_POSITIVES",
    "AUROCReport",
    "BootstrapCI",
    "DefinedMultilabelAUROC",
    "auroc_report",
    "bootstrap_auroc",
    "bootstrap_weights",
    "ci_classes",
    "deduplicate",
    "format_markdown_table",
    "midrank_auroc",
    "undefined_classes",
    "weighted_auroc",
]

DEFAULT_MIN_POSITIVES = 10
"""Fewest positives (and negatives) a class needs for a bootstrap interval and the macro mean.

With fewer, the resampled AUROC takes only a handful of values, resamples without a positive are
frequent (about ``exp(-k)`` for ``k`` positive reports) and the percentile interval under-covers;
from about 10 positive reports on, simulated coverage of the 95 % interval is close to nominal.
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


def ci_classes(target: Tensor, min_positives: int = DEFAULT_MIN_POSITIVES) -> Tensor:
    """Return the fixed class set of the intervals and the macro mean.

    Args:
        target: Labels ``[N, C]`` in {0, 1}.
        min_positives: Fewest positives and fewest negatives a class needs (``>= 1``).

    Returns:
        Bool tensor ``[C]``: ``True`` for classes with at least ``min_positives`` positives and
        at least ``min_positives`` negatives.
    """
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}.")
    positives = target.long().sum(dim=0)
    negatives = target.shape[0] - positives
    return torch.minimum(positives, negatives) >= min_positives


def midrank_auroc(preds: Tensor, target: Tensor) -> Tensor:
    """AUROC per class by the Mann-Whitney U statistic with mid-ranks for tied scores.

    Batched: leading dimensions (e.g. bootstrap resamples) are kept.

    Args:
        preds: Scores, shape ``[..., N, C]``.
        target: Labels in {0, 1}, shape ``[..., N, C]``.

    Returns:
        AUROC ``[..., C]`` in float64; ``NaN`` where the class has no positives or no negatives.
    """
    scores = preds.double().transpose(-1, -2).contiguous()  # [..., C, N]
    labels = target.double().transpose(-1, -2)
    ordered = scores.sort(dim=-1).values
    low = torch.searchsorted(ordered, scores, side="left").double()
    high = torch.searchsorted(ordered, scores, side="right").double()
    ranks = (low + high + 1.0) / 2.0  # 1-based mid-ranks
    n_pos = labels.sum(dim=-1)
    n_neg = labels.shape[-1] - n_pos
    rank_sum = (ranks * labels).sum(dim=-1)
    auc = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, math.nan))


def weighted_auroc(preds: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """AUROC per class with row weights, for many weightings at once.

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
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95.")
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
        num_clusters: Clusters (reports) resampled by the bootstrap (0 = no bootstrap).
        dropped_resamples: Resamples left out of the macro interval (see :func:`bootstrap_auroc`).
        notes: Per-class note: empty, ``undefined: ...`` or ``fewer than k positives ...``.
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
        note = (
            f"macro mean over the {count} classes with >= {self.min_positives} positives and "
            "negatives"
        )
        if self.num_clusters:
            note += f"; bootstrap over {self.num_clusters} report groups"
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
) -> AUROCReport:
    """Build the AUROC table with counts, the fixed-set macro mean and bootstrap intervals.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        label_names: ``C`` class names.
        per_class: Precomputed per-class AUROC (e.g. from torchmetrics); computed by
            :func:`midrank_auroc` when ``None``.
        groups: Report (cluster) id per row ``[N]`` for the bootstrap; ``None`` = rows.
        num_resamples: Bootstrap resamples; 0 disables the intervals.
        seed: Bootstrap seed.
        confidence: Confidence level of the intervals.
        min_positives: A class needs this many positives and negatives to be in the macro mean
            and to get an interval (1 = every class with a defined AUROC, no interval rule).

    Returns:
        The filled :class:`AUROCReport`.
    """
    if preds.shape != target.shape or preds.ndim != 2 or preds.shape[1] != len(label_names):
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [N, C] with "
            f"C = len(label_names) = {len(label_names)}; pass matching label_names."
        )
    target = target.long()
    undefined = undefined_classes(target)
    if per_class is None:
        per_class = midrank_auroc(preds, target)
    per_class = torch.where(
        undefined.to(per_class.device), torch.full_like(per_class, math.nan), per_class
    )
    positives = target.sum(dim=0)
    negatives = target.shape[0] - positives
    fixed = ci_classes(target, min_positives)
    mean = (
        float(per_class[fixed.to(per_class.device)].double().mean())
        if bool(fixed.any())
        else math.nan
    )
    notes = []
    for pos, neg, keep in zip(positives.tolist(), negatives.tolist(), fixed.tolist(), strict=True):
        if pos == 0 or neg == 0:
            notes.append("undefined: no " + ("positives" if pos == 0 else "negatives"))
        elif not keep:
            notes.append(f"fewer than {min_positives} positives or negatives: no CI, not in mean")
        else:
            notes.append("")
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
        notes=notes,
    )
    if num_resamples > 0 and preds.shape[0] > 0:
        ci = bootstrap_auroc(preds, target, groups, num_resamples, seed, confidence, min_positives)
        report.ci_low = [float(v) for v in ci.class_ci[0].tolist()]
        report.ci_high = [float(v) for v in ci.class_ci[1].tolist()]
        report.mean_ci = (float(ci.mean_ci[0]), float(ci.mean_ci[1]))
        report.num_clusters = ci.num_clusters
        report.dropped_resamples = ci.dropped_resamples
    return report


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def format_markdown_table(report: AUROCReport) -> str:
    """Render an :class:`AUROCReport` as a Markdown table (undefined values shown as ``n/a``)."""
    pct = round(report.confidence * 100)
    lines = [
        f"| label | AUROC | {pct}% CI | positives | negatives | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows():
        low, high = float(row["ci_low"]), float(row["ci_high"])
        ci = "n/a" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]"
        lines.append(
            f"| {row['label']} | {_fmt(float(row['auroc']))} | {ci} | {row['positives']} | "
            f"{row['negatives']} | {row['note']} |"
        )
    return "\n".join(lines)


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
        undefined = undefined_classes(target)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples in targets.*")
            per_class = multilabel_auroc(
                preds,
                target.long(),
                self.num_labels,
                average="none",
                thresholds=None,
                validate_args=False,
            )
        if bool(undefined.any()):
            names = [n for n, u in zip(self.label_names, undefined.tolist(), strict=False) if u]
            warnings.warn(
                f"AUROC is undefined (no positives or no negatives in the evaluated set) for "
                f"{names}; reported as NaN and excluded from the mean. Evaluate on a larger set "
                "to get these classes.",
                UserWarning,
                stacklevel=2,
            )
        return torch.where(undefined, torch.full_like(per_class, math.nan), per_class)
