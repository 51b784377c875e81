"""Threshold choice and metrics at the thresholds (hand-computed values) and the callback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from medllama_fusion.metrics import (
    markdown_table,
    select_thresholds,
    threshold_metrics,
    threshold_rows,
)
from medllama_fusion.trainers import FusionClassifier
from medllama_fusion.trainers.operating_points import (
    STATE_KEY,
    OperatingPoints,
    thresholds_from_checkpoint,
)
from tests.trainers.helpers import ContractDataModule, tiny_fusion

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
    with pytest.raises(ValueError, match="target_sensitivity"):
        OperatingPoints(target_sensitivity=0.0)
    with pytest.raises(ValueError, match="method"):
        select_thresholds(PROBS, TARGET, "youden")  # type: ignore[arg-type]


def test_threshold_rows_make_the_operating_points_table() -> None:
    thresholds = torch.tensor([0.35, 0.5])
    metrics = threshold_metrics(PROBS, TARGET, thresholds, n_bins=10)
    rows = threshold_rows(["a", "b"], thresholds, metrics, TARGET)
    header = list(rows[0])
    assert header == ["label", "threshold", "sensitivity", "specificity", "f1", "ece", "positives"]
    assert rows[0] == {
        "label": "a",
        "threshold": "0.3500",
        "sensitivity": "1.0000",
        "specificity": "0.5000",
        "f1": "0.8000",
        "ece": f"{(0.1 + 0.4 + 0.65 + 0.2) / 4:.4f}",
        "positives": 2,
    }
    # the mean row averages where a value is defined (class b has no sensitivity or F1)
    assert rows[2]["label"] == "mean" and rows[2]["threshold"] == ""
    assert rows[2]["sensitivity"] == "1.0000" and rows[2]["f1"] == "0.8000"
    assert rows[2]["specificity"] == "0.6250" and rows[2]["positives"] == 2
    table = markdown_table(header, [[r[h] for h in header] for r in rows]).splitlines()
    assert table[0] == "| label | threshold | sensitivity | specificity | f1 | ece | positives |"
    assert table[1] == "|---|---|---|---|---|---|---|"
    assert table[4].startswith("| mean |  | 1.0000 | 0.6250 | 0.8000 |")


def test_thresholds_from_checkpoint_reads_the_callback_state() -> None:
    callback = OperatingPoints()
    callback.thresholds = {"a": 0.25, "b": 0.7}
    assert callback.state_key == STATE_KEY
    checkpoint = {"callbacks": {callback.state_key: callback.state_dict(), "Other": {}}}
    assert thresholds_from_checkpoint(checkpoint) == {"a": 0.25, "b": 0.7}
    assert thresholds_from_checkpoint({"callbacks": {STATE_KEY: {"thresholds": {}}}}) is None
    assert thresholds_from_checkpoint({}) is None


def _trainer(tmp_path: Path, callbacks: list[Callback]) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        callbacks=callbacks,
    )


class _HookWatch(Callback):
    """Records the forward hooks of the module and its fusion model after every eval batch."""

    def __init__(self) -> None:
        self.hooks: list[int] = []

    def _record(self, pl_module: LightningModule) -> None:
        modules = [pl_module, *pl_module.modules()]
        self.hooks.append(sum(len(m._forward_hooks) for m in modules))

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *_: Any
    ) -> None:
        self._record(pl_module)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        self._record(pl_module)


def test_callback_reads_the_classifier_rows_without_hooking_forward(tmp_path: Path) -> None:
    model = FusionClassifier(
        tiny_fusion(),
        label_names=["a", "b", "c"],
        bootstrap_resamples=0,
        plot_roc=False,
        report_dir=str(tmp_path / "report"),
        min_positives=2,
    )
    callback = OperatingPoints(method="f1")
    watch = _HookWatch()
    trainer = _trainer(tmp_path, [callback, watch])
    dm = ContractDataModule()
    trainer.validate(model, datamodule=dm, verbose=False)
    assert watch.hooks and set(watch.hooks) == {0}  # no forward hook, on any submodule
    rows = model.evaluated("val")
    assert rows is not None and rows.probs.shape == (23, 3)  # every val row once
    assert torch.equal(rows.index, torch.arange(23))
    expected = select_thresholds(rows.probs, rows.target, "f1")
    assert callback.thresholds == dict(zip(["a", "b", "c"], expected.tolist(), strict=True))

    trainer.test(model, datamodule=dm, verbose=False)
    assert set(watch.hooks) == {0}
    test_rows = model.evaluated("test")
    assert test_rows is not None and test_rows.probs.shape == (23, 3)
    metrics = threshold_metrics(test_rows.probs, test_rows.target, expected, 15)
    assert callback.test_metrics is not None
    for key, value in metrics.items():
        assert torch.allclose(callback.test_metrics[key], value, equal_nan=True), key
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"operating_points.md", "operating_points.csv", "reliability_diagram.png"} <= files
    with pytest.raises(ValueError, match="stage"):
        model.evaluated("predict")  # type: ignore[arg-type]


class _Plain(LightningModule):
    """A LightningModule without ``evaluated``: logits from one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)
        self.label_names = ["a", "b", "c"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.layer(batch[0])

    def val_dataloader(self) -> Any:
        data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8, 3)))
        return torch.utils.data.DataLoader(data, batch_size=4)


def test_callback_without_classifier_does_nothing_and_warns_once(tmp_path: Path) -> None:
    callback = OperatingPoints()
    trainer = _trainer(tmp_path, [callback])
    with pytest.warns(UserWarning, match="OperatingPoints needs a LightningModule") as caught:
        trainer.validate(_Plain(), verbose=False)
        trainer.validate(_Plain(), verbose=False)
    assert sum("OperatingPoints needs" in str(w.message) for w in caught) == 1
    assert callback.thresholds == {}
