"""Threshold choice and metrics at the thresholds, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from medllama_fusion.trainers.operating_points import (
    OperatingPoints,
    select_thresholds,
    threshold_metrics,
)

# class 0: scores 0.1 0.4 0.35 0.8 for labels 0 0 1 1; class 1: no positives at all
PROBS = torch.tensor([[0.1, 0.2], [0.4, 0.3], [0.35, 0.6], [0.8, 0.1]])
TARGET = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0]])


def test_max_f1_threshold() -> None:
    # t=0.35: TP 2, FP 1 -> F1 0.8; t=0.4: F1 0.5; t=0.8: F1 2/3
    chosen = select_thresholds(PROBS, TARGET, "f1", default=0.5)
    assert chosen.tolist() == pytest.approx([0.35, 0.5])


def test_fixed_sensitivity_threshold() -> None:
    # sensitivity >= 0.9 needs both positives: the highest such threshold is 0.35
    chosen = select_thresholds(PROBS, TARGET, "sensitivity", target_sensitivity=0.9)
    assert chosen[0] == pytest.approx(0.35)
    # sensitivity >= 0.5 is reached at 0.8 with specificity 1
    assert select_thresholds(PROBS, TARGET, "sensitivity", 0.5)[0] == pytest.approx(0.8)


def test_metrics_at_thresholds_and_calibration() -> None:
    metrics = threshold_metrics(PROBS, TARGET, torch.tensor([0.35, 0.5]), n_bins=10)
    assert metrics["sensitivity"][0] == pytest.approx(1.0)
    assert metrics["specificity"][0] == pytest.approx(0.5)
    assert metrics["f1"][0] == pytest.approx(0.8)
    assert math.isnan(float(metrics["sensitivity"][1])) and math.isnan(float(metrics["f1"][1]))
    assert metrics["specificity"][1] == pytest.approx(0.75)  # 0.6 >= 0.5 is one false positive
    # every score in its own bin: ECE = mean |p - y|
    assert metrics["ece"][0] == pytest.approx((0.1 + 0.4 + 0.65 + 0.2) / 4)


def test_state_round_trip_and_validation() -> None:
    callback = OperatingPoints(method="sensitivity", target_sensitivity=0.8)
    callback.thresholds = {"a": 0.25}
    restored = OperatingPoints()
    restored.load_state_dict(callback.state_dict())
    assert restored.thresholds == {"a": 0.25}
    with pytest.raises(ValueError, match="method"):
        OperatingPoints(method="youden")
