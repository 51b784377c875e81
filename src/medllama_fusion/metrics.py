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
- **Intervals.** :func:`auroc_report` adds a cluster (report-level) percentile bootstrap: whole
  report groups are drawn with replacement (rows when no groups are given), because the images of
  one report share its labels and text and are not independent. The interval is computed only
  for a fixed class set, the classes with at least ``min_positives`` positives and as many
  negatives in the evaluated set (default :data:`DEFAULT_MIN_POSITIVES`); the macro mean and its
  interval average exactly that set in the full set and in every resample. The others are
  reported with their point AUROC (when defined) and a note, never averaged in. Resample AUROCs
  come from :func:`weighted_auroc` (weighted Mann-Whitney formula, ties count 1/2), vectorised
  over resamples and classes.
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
    "AUROCReport",
    "BootstrapCI",
    "DefinedMultilabelAUROC",
    "ThresholdMethod",
    "auroc_report",
    "bootstrap_auroc",
    "bootstrap_weights",
    "ci_classes",
    "deduplicate",
    "format_markdown_table",
    "markdown_table",
    "per_class_auroc",
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
            :func:`per_class_auroc` when ``None``.
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
        per_class = per_class_auroc(preds, target)
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

    Example:
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
