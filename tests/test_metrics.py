import math
import warnings

import numpy as np
import pytest
import torch

from medllama_fusion.metrics import (
    DefinedMultilabelAUROC,
    auroc_report,
    bootstrap_auroc,
    bootstrap_indices,
    format_markdown_table,
    midrank_auroc,
)

PREDS = torch.tensor([[0.9, 0.2, 0.5], [0.4, 0.8, 0.1], [0.6, 0.3, 0.7], [0.1, 0.3, 0.2]])
TARGET = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])


def pair_count_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC by counting concordant pairs (ties count 1/2)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_midrank_matches_hand_counts_and_torchmetrics() -> None:
    # class 0: positives 0.9, 0.6 vs negatives 0.4, 0.1 -> 4/4 concordant = 1.0
    # class 1: positives 0.8, 0.3 vs negatives 0.2, 0.3 -> (1 + 1) + (1 + 0.5) = 3.5/4
    auc = midrank_auroc(PREDS, TARGET)
    assert auc[0].item() == pytest.approx(1.0)
    assert auc[1].item() == pytest.approx(3.5 / 4)
    assert math.isnan(auc[2].item())  # no positives
    metric = DefinedMultilabelAUROC(3, ["a", "b", "c"])
    metric.update(PREDS, TARGET)
    with pytest.warns(UserWarning, match=r"undefined.*\['c'\]"):
        tm = metric.compute()
    assert torch.allclose(tm[:2].double(), auc[:2])
    assert math.isnan(tm[2].item())


def test_random_against_pair_counting() -> None:
    g = torch.Generator().manual_seed(3)
    preds = torch.randint(0, 5, (30, 4), generator=g).float() / 4  # many ties
    target = torch.randint(0, 2, (30, 4), generator=g)
    auc = midrank_auroc(preds, target)
    for c in range(4):
        ref = pair_count_auroc(preds[:, c].numpy(), target[:, c].numpy())
        assert auc[c].item() == pytest.approx(ref)


def numpy_bootstrap(preds, target, idx, confidence):
    aucs = np.full((idx.shape[0], preds.shape[1]), np.nan)
    for r, rows in enumerate(idx):
        for c in range(preds.shape[1]):
            aucs[r, c] = pair_count_auroc(preds[rows, c], target[rows, c])
    defined = (target.sum(0) > 0) & (target.sum(0) < len(target))
    means = np.array([np.nanmean(a[defined]) if np.any(~np.isnan(a[defined])) else np.nan
                      for a in aucs])
    a = (1 - confidence) / 2 * 100
    return (np.nanpercentile(aucs, [a, 100 - a], axis=0), np.nanpercentile(means, [a, 100 - a]))


def test_bootstrap_against_numpy_reference() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (25, 3), generator=g)
    preds = (target.float() * 0.3 + torch.rand(25, 3, generator=g)).round(decimals=1)
    class_ci, mean_ci = bootstrap_auroc(preds, target, num_resamples=200, seed=7, chunk_size=64)
    idx = bootstrap_indices(25, 200, seed=7).numpy()
    ref_class, ref_mean = numpy_bootstrap(preds.numpy(), target.numpy(), idx, 0.95)
    np.testing.assert_allclose(class_ci.numpy(), ref_class, rtol=1e-9)
    np.testing.assert_allclose(mean_ci.numpy(), ref_mean, rtol=1e-9)
    assert class_ci[0, 0] < class_ci[1, 0]
    # seeded: same seed -> same indices, other seed -> other indices
    assert torch.equal(bootstrap_indices(25, 5, 1), bootstrap_indices(25, 5, 1))
    assert not torch.equal(bootstrap_indices(25, 5, 1), bootstrap_indices(25, 5, 2))


def test_report_marks_undefined_and_rare_classes() -> None:
    preds = torch.cat([PREDS, PREDS])
    target = torch.cat([TARGET, TARGET])
    target[0, 2] = 1  # class c: exactly one positive -> AUROC defined but no CI
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = auroc_report(preds, target, ["a", "b", "c"], num_resamples=50, min_positives=2)
    assert report.positives == [4, 4, 1]
    assert not math.isnan(report.auroc[2]) and math.isnan(report.ci_low[2])
    assert "too few" in report.notes[2]
    assert report.mean == pytest.approx(sum(report.auroc) / 3)
    table = format_markdown_table(report)
    assert "| c |" in table and "n/a" in table and "| mean |" in table
    target[:, 2] = 0
    report = auroc_report(preds, target, ["a", "b", "c"], num_resamples=0)
    assert math.isnan(report.auroc[2]) and report.notes[2] == "undefined: no positives"
    assert report.mean == pytest.approx((report.auroc[0] + report.auroc[1]) / 2)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="label_names"):
        auroc_report(PREDS, TARGET, ["a"])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auroc(PREDS, TARGET, confidence=1.5)
