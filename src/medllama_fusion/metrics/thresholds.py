"""Operating points: one threshold per class, metrics at the thresholds, calibration."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_calibration_error,
    binary_precision_recall_curve,
    binary_specificity_at_sensitivity,
    multilabel_f1_score,
    multilabel_recall,
    multilabel_specificity,
)

from medllama_fusion.extras import require
from medllama_fusion.metrics.auroc import undefined_classes

__all__ = [
    "ThresholdMethod",
    "plot_reliability",
    "select_thresholds",
    "threshold_metrics",
    "threshold_rows",
]

ThresholdMethod = Literal["f1", "sensitivity"]
"""How :func:`select_thresholds` chooses a threshold: maximal F1, or a target sensitivity."""


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
