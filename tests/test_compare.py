"""``medllama_fusion.metrics.compare``: the paired AUROC difference of two models."""

from __future__ import annotations

import math

import pytest
import torch

from medllama_fusion.metrics import Comparison, auroc_intervals, compare, markdown_table

NAMES = ["a", "b", "c", "rare"]


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """300 rows in 150 two-row reports; classes with 40, 60, 20 and 2 positive reports."""
    g = torch.Generator().manual_seed(seed)
    reports = torch.zeros(150, 4, dtype=torch.long)
    for c, k in enumerate((40, 60, 20, 2)):
        reports[torch.randperm(150, generator=g)[:k], c] = 1
    target = reports.repeat_interleave(2, dim=0)
    groups = torch.arange(150).repeat_interleave(2)
    signal = target.double() * 1.2 + torch.randn(300, 4, generator=g, dtype=torch.float64)
    return signal, target, groups


def test_a_model_against_itself() -> None:
    preds, target, groups = _data()
    result = compare(preds, preds.clone(), target, groups, NAMES)
    assert result.in_mean == [True, True, True, False]
    for c in range(3):
        assert result.difference[c] == 0.0
        assert (result.ci_low[c], result.ci_high[c]) == (0.0, 0.0)
        assert result.p_value[c] == 1.0
    assert result.mean_difference == 0.0 and result.mean_ci == (0.0, 0.0)
    assert result.mean_p_value == 1.0
    assert (
        result.mean_a == result.mean_b == pytest.approx(auroc_intervals(preds, target, groups).mean)
    )
    # the rare class (2 positive reports) has its difference but no interval
    assert result.difference[3] == 0.0 and math.isnan(result.ci_low[3])
    assert math.isnan(result.p_value[3])
    assert result.notes[3] == "fewer than 5 positive or negative reports: no CI, not in mean"


def test_a_clearly_better_model() -> None:
    preds, target, groups = _data(1)
    g = torch.Generator().manual_seed(2)
    worse = preds + 1.5 * torch.randn(preds.shape, generator=g, dtype=torch.float64)
    result = compare(preds, worse, target, groups, NAMES, names=("good", "noisy"))
    assert result.mean_difference > 0.05
    assert result.mean_p_value < 0.05 and 0.0 < result.mean_ci[0] < result.mean_ci[1]
    assert result.mean_ci[0] < result.mean_difference < result.mean_ci[1]
    for c in (0, 1):  # 40 and 60 positive reports
        assert result.p_value[c] < 0.05 and result.ci_low[c] > 0.0
    # swapping the models mirrors everything
    mirror = compare(worse, preds, target, groups, NAMES)
    assert mirror.mean_difference == pytest.approx(-result.mean_difference)
    assert mirror.mean_ci == pytest.approx((-result.mean_ci[1], -result.mean_ci[0]))
    assert mirror.mean_p_value == pytest.approx(result.mean_p_value)
    # a wider level gives a wider interval, the same p-value
    wide = compare(preds, worse, target, groups, NAMES, confidence=0.99)
    assert wide.mean_ci[0] < result.mean_ci[0] and wide.mean_p_value == result.mean_p_value


def test_interval_and_p_value_agree() -> None:
    """The interval excludes 0 exactly when p < 1 - confidence."""
    target_seed = 3
    preds, target, groups = _data(target_seed)
    g = torch.Generator().manual_seed(4)
    for scale in (0.2, 0.6, 1.0, 2.0):
        other = preds + scale * torch.randn(preds.shape, generator=g, dtype=torch.float64)
        result = compare(preds, other, target, groups, NAMES)
        for c in range(3):
            excludes = result.ci_low[c] > 0 or result.ci_high[c] < 0
            assert excludes == (result.p_value[c] < 0.05)


def test_rows_and_table() -> None:
    preds, target, groups = _data(5)
    other = preds.flip(0)
    result = compare(preds, other, target, groups, NAMES, names=("new", "old"))
    assert isinstance(result, Comparison)
    rows = result.rows()
    assert [row["label"] for row in rows] == [*NAMES, "mean"]
    assert set(rows[0]) == {
        "label",
        "auroc_a",
        "auroc_b",
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "positives",
        "negatives",
        "note",
    }
    table = result.table()
    lines = table.splitlines()
    assert lines[0] == (
        "| label | AUROC new | AUROC old | new - old | 95% CI | p-value | positives | note |"
    )
    assert lines[1] == "|" + "---|" * 8  # markdown_table's rule
    assert table == markdown_table(
        lines[0][2:-2].split(" | "), [r[2:-2].split(" | ") for r in lines[2:]]
    )
    assert lines[-1].startswith("| mean |")
    assert "macro mean over the 3 classes with >= 5 positive and negative reports" in lines[-1]
    assert "150 report groups" in lines[-1]
    assert "| rare |" in table and "n/a" in table


def test_rows_without_groups_and_bad_arguments() -> None:
    preds, target, _ = _data(6)
    result = compare(preds, preds * 0.5, target)  # same ranking: no difference
    assert result.label_names == ["class_0", "class_1", "class_2", "class_3"]
    assert result.counts == "rows" and result.num_clusters == 300
    assert result.mean_difference == 0.0 and result.mean_p_value == 1.0
    with pytest.raises(ValueError, match="same rows"):
        compare(preds, preds[:10], target)
    with pytest.raises(ValueError, match="label_names"):
        compare(preds, preds, target, label_names=["x"])
    with pytest.raises(ValueError, match="confidence"):
        compare(preds, preds, target, confidence=1.0)
