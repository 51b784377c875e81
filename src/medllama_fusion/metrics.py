"""Multilabel AUROC with undefined-class handling and percentile bootstrap confidence intervals.

Per-class AUROC comes from torchmetrics (:class:`MultilabelAUROC`, exact, accumulated on device and
gathered across processes). A class with no positives or no negatives in the evaluated set has no
AUROC: it is reported as ``NaN`` and left out of the macro mean, with a warning.

The bootstrap resamples whole examples (rows) with replacement, ``num_resamples`` times, from a
seeded :class:`torch.Generator`, computes every class's AUROC in each resample by the rank
(Mann-Whitney U) formula with mid-ranks for ties, vectorised over resamples and classes, and takes
percentile intervals. A class with fewer than ``min_positives`` positives gets no interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAUROC
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "AUROCReport",
    "DefinedMultilabelAUROC",
    "auroc_report",
    "bootstrap_auroc",
    "bootstrap_indices",
    "format_markdown_table",
    "midrank_auroc",
    "undefined_classes",
]


def undefined_classes(target: Tensor) -> Tensor:
    """Return a boolean mask of classes whose AUROC is undefined.

    Args:
        target: Labels in {0, 1}, shape ``[..., N, C]``.

    Returns:
        Bool tensor ``[..., C]``: ``True`` where a class has no positive or no negative example.
    """
    positives = target.sum(dim=-2)
    return (positives == 0) | (positives == target.shape[-2])


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


def bootstrap_indices(
    num_examples: int, num_resamples: int = 1000, seed: int = 0, device: torch.device | None = None
) -> Tensor:
    """Draw bootstrap resample indices from a seeded CPU generator (identical on every device).

    Args:
        num_examples: Number of rows ``N`` to resample.
        num_resamples: Number of resamples ``R``.
        seed: Generator seed.
        device: Device of the returned tensor.

    Returns:
        LongTensor ``[R, N]`` of row indices.
    """
    if num_examples < 1 or num_resamples < 1:
        raise ValueError(
            f"bootstrap needs num_examples >= 1 and num_resamples >= 1, got {num_examples} and "
            f"{num_resamples}; evaluate on a non-empty set and set bootstrap_resamples >= 1."
        )
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, num_examples, (num_resamples, num_examples), generator=generator)
    return indices.to(device) if device is not None else indices


@dataclass
class AUROCReport:
    """AUROC results for one evaluated set.

    Attributes:
        label_names: Class names, length ``C``.
        auroc: Per-class AUROC (``NaN`` = undefined), length ``C``.
        mean: Macro mean over defined classes (``NaN`` if none is defined).
        positives: Positive count per class.
        negatives: Negative count per class.
        ci_low: Per-class lower CI bound (``NaN`` when not computed), length ``C``.
        ci_high: Per-class upper CI bound.
        mean_ci: ``(low, high)`` of the macro mean.
        confidence: Confidence level of the intervals, e.g. 0.95.
        min_positives: Classes with fewer positives get no interval.
        notes: Per-class note ("", "undefined: no positives", "too few positives (<2) for a CI").
    """

    label_names: list[str]
    auroc: list[float]
    mean: float
    positives: list[int]
    negatives: list[int]
    ci_low: list[float] = field(default_factory=list)
    ci_high: list[float] = field(default_factory=list)
    mean_ci: tuple[float, float] = (math.nan, math.nan)
    confidence: float = 0.95
    min_positives: int = 2
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
        rows.append(
            {
                "label": "mean",
                "auroc": self.mean,
                "ci_low": self.mean_ci[0],
                "ci_high": self.mean_ci[1],
                "positives": sum(self.positives),
                "negatives": sum(self.negatives),
                "note": f"macro mean over {sum(not math.isnan(a) for a in self.auroc)} classes",
            }
        )
        return rows


def bootstrap_auroc(
    preds: Tensor,
    target: Tensor,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk_size: int = 100,
) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap intervals of per-class AUROC and of the macro mean.

    The mean of one resample averages the classes defined in that resample among those defined in
    the full set. Resamples where a class is undefined are ignored for that class.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        num_resamples: Number of resamples (indices from :func:`bootstrap_indices` with ``seed``).
        seed: Seed of the resampling generator.
        confidence: Two-sided confidence level in (0, 1).
        chunk_size: Resamples processed at once (bounds memory to ``chunk_size * N * C``).

    Returns:
        ``(class_ci, mean_ci)``: float64 tensors ``[2, C]`` and ``[2]`` with lower/upper bounds
        (``NaN`` where no resample defines the quantity).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95.")
    indices = bootstrap_indices(preds.shape[0], num_resamples, seed, device=preds.device)
    defined = ~undefined_classes(target)
    per_class = []
    for start in range(0, num_resamples, chunk_size):
        idx = indices[start : start + chunk_size]
        per_class.append(midrank_auroc(preds[idx], target[idx]))
    aucs = torch.cat(per_class)  # [R, C]
    masked = torch.where(defined, aucs, torch.full_like(aucs, math.nan))
    means = masked.nanmean(dim=1)  # NaN when no class is defined in a resample
    alpha = (1.0 - confidence) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64, device=preds.device)
    return torch.nanquantile(aucs, q, dim=0), torch.nanquantile(means, q)


def auroc_report(
    preds: Tensor,
    target: Tensor,
    label_names: Sequence[str],
    per_class: Tensor | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_positives: int = 2,
) -> AUROCReport:
    """Build the AUROC table with counts and (optionally) bootstrap intervals.

    Args:
        preds: Scores ``[N, C]``.
        target: Labels ``[N, C]`` in {0, 1}.
        label_names: ``C`` class names.
        per_class: Precomputed per-class AUROC (e.g. from torchmetrics); computed by
            :func:`midrank_auroc` when ``None``.
        num_resamples: Bootstrap resamples; 0 disables the intervals.
        seed: Bootstrap seed.
        confidence: Confidence level of the intervals.
        min_positives: A class with fewer positives (or negatives) than this gets no interval.

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
    mean = per_class[~undefined].double().mean() if bool((~undefined).any()) else None
    notes = []
    for pos, neg in zip(positives.tolist(), negatives.tolist(), strict=False):
        if pos == 0 or neg == 0:
            notes.append("undefined: no " + ("positives" if pos == 0 else "negatives"))
        elif min(pos, neg) < min_positives:
            notes.append(f"too few positives/negatives (< {min_positives}) for a CI")
        else:
            notes.append("")
    report = AUROCReport(
        label_names=list(label_names),
        auroc=[float(v) for v in per_class.tolist()],
        mean=float(mean) if mean is not None else math.nan,
        positives=[int(v) for v in positives.tolist()],
        negatives=[int(v) for v in negatives.tolist()],
        ci_low=[math.nan] * len(label_names),
        ci_high=[math.nan] * len(label_names),
        confidence=confidence,
        min_positives=min_positives,
        notes=notes,
    )
    if num_resamples > 0 and preds.shape[0] > 0:
        class_ci, mean_ci = bootstrap_auroc(preds, target, num_resamples, seed, confidence)
        enough = (torch.minimum(positives, negatives) >= min_positives).to(class_ci.device)
        class_ci = torch.where(enough, class_ci, torch.full_like(class_ci, math.nan))
        report.ci_low = [float(v) for v in class_ci[0].tolist()]
        report.ci_high = [float(v) for v in class_ci[1].tolist()]
        report.mean_ci = (float(mean_ci[0]), float(mean_ci[1]))
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


class DefinedMultilabelAUROC(MultilabelAUROC):
    """Exact per-class :class:`MultilabelAUROC` that marks undefined classes as ``NaN``.

    ``compute()`` returns the per-class AUROC ``[C]`` (``NaN`` for a class with no positives or no
    negatives, with a warning naming it). The gathered predictions and targets of the last
    ``compute()`` (all processes) stay available as ``gathered_preds`` / ``gathered_target``.

    Args:
        num_labels: Number of classes.
        label_names: Names used in warnings; defaults to ``class_<i>``.
    """

    def __init__(self, num_labels: int, label_names: Sequence[str] | None = None) -> None:
        super().__init__(num_labels=num_labels, average="none", thresholds=None)
        self.label_names = list(label_names) if label_names else [
            f"class_{i}" for i in range(num_labels)
        ]
        self.gathered_preds: Tensor | None = None
        self.gathered_target: Tensor | None = None

    def compute(self) -> Tensor:  # type: ignore[override]
        """Return per-class AUROC ``[C]`` with ``NaN`` for undefined classes."""
        preds = dim_zero_cat(self.preds)
        target = dim_zero_cat(self.target)
        self.gathered_preds, self.gathered_target = preds, target
        undefined = undefined_classes(target)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples in targets.*")
            per_class = super().compute()
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
