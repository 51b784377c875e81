"""The AUROC table of an evaluated set: counts, fixed-set macro mean, intervals, ROC curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from medllama_fusion.extras import require
from medllama_fusion.metrics.auroc import (
    DEFAULT_MIN_POSITIVES,
    ci_classes,
    per_class_auroc,
    undefined_classes,
)
from medllama_fusion.metrics.bootstrap import bootstrap_auroc
from medllama_fusion.metrics.comparison import _class_notes
from medllama_fusion.metrics.intervals import auroc_intervals
from medllama_fusion.metrics.tables import _fmt, format_interval, markdown_table

__all__ = [
    "AUROCReport",
    "IntervalMethod",
    "auroc_report",
    "format_markdown_table",
    "plot_roc_curves",
]

IntervalMethod = Literal["newcombe", "bootstrap"]
"""How :func:`auroc_report` builds its intervals: ``"newcombe"`` (:func:`auroc_intervals`, the
default) or ``"bootstrap"`` (:func:`bootstrap_auroc`, the cluster percentile bootstrap)."""


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


def format_markdown_table(report: AUROCReport) -> str:
    """Render an :class:`AUROCReport` as a Markdown table (undefined values shown as ``n/a``)."""
    pct = round(report.confidence * 100)
    header = ["label", "AUROC", f"{pct}% CI", "positives", "negatives", "note"]
    lines = []
    for row in report.rows():
        low, high = float(row["ci_low"]), float(row["ci_high"])
        ci = format_interval(low, high)
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
