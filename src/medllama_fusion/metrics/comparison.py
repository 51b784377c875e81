"""Paired comparison of two models on the same rows: differences, intervals, p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from medllama_fusion.metrics.auroc import DEFAULT_MIN_POSITIVES, _check_confidence, ci_classes
from medllama_fusion.metrics.intervals import (
    _class_variances,
    _rescaling,
    _satterthwaite,
    _student_critical,
    _student_p_value,
    auroc_influence,
)
from medllama_fusion.metrics.tables import (
    _fmt,
    _fmt_p,
    _fmt_signed,
    format_interval,
    markdown_table,
)

__all__ = ["Comparison", "compare"]


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
            ci = format_interval(low, high, signed=True)
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
