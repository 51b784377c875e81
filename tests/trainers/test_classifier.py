"""FusionClassifier in-process: presence masks, pos_weight, schedule on resume, test report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from medllama_fusion.errors import InputError
from medllama_fusion.trainers import FusionClassifier

from .helpers import ContractDataModule, contract_collate, tiny_fusion


def _trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    settings: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    settings.update(kwargs)
    return Trainer(**settings)


def _model(**kwargs: Any) -> FusionClassifier:
    kwargs.setdefault("bootstrap_resamples", 20)
    kwargs.setdefault("plot_roc", False)
    return FusionClassifier(tiny_fusion(), label_names=["a", "b", "c"], **kwargs)


def test_forward_passes_presence_masks_only_when_in_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model()
    seen: list[dict[str, Any]] = []
    original = type(model.fusion).forward

    def spy(self: torch.nn.Module, **kwargs: Any) -> Any:
        seen.append(dict(kwargs))
        kwargs.pop("text_present", None)
        kwargs.pop("image_present", None)
        return original(self, **kwargs)

    monkeypatch.setattr(type(model.fusion), "forward", spy)
    dm = ContractDataModule()
    batch = contract_collate([dm.sets["val"][i] for i in range(3)])
    batch["text_present"] = torch.tensor([True, False, True])
    batch["image_present"] = torch.tensor([False, True, True])
    model(batch)
    assert seen[-1]["text_present"] is batch["text_present"]
    assert seen[-1]["image_present"] is batch["image_present"]
    del batch["text_present"], batch["image_present"]
    model(batch)
    assert not {"text_present", "image_present"} & set(seen[-1])


class _NoTrainLabels(ContractDataModule):
    @property
    def train_labels(self) -> torch.Tensor:  # type: ignore[override]
        raise AttributeError("no training split")


def test_pos_weight_auto_in_validate_and_from_checkpoint(tmp_path: Path) -> None:
    dm = ContractDataModule()
    labels = dm.train_labels
    expected = (labels.shape[0] - labels.sum(0)) / labels.sum(0).clamp(min=1)
    assert not torch.allclose(expected, torch.ones(3))

    # validate alone (no fit) uses the same weights as fit, and val/loss is the weighted BCE
    model = _model(pos_weight="auto")
    trainer = _trainer(tmp_path)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert torch.allclose(model.pos_weight, expected)
    batch = contract_collate([dm.sets["val"][i] for i in range(len(dm.sets["val"]))])
    model.eval()
    with torch.no_grad():
        logits = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, batch["labels"], pos_weight=expected
    )
    assert metrics["val/loss"] == pytest.approx(float(loss), rel=1e-5)

    # fit writes the weights into the checkpoint; a later validate with a datamodule that has no
    # training labels uses them
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, max_steps=2, enable_checkpointing=True, callbacks=[ckpt]).fit(
        _model(pos_weight="auto"), datamodule=dm
    )
    stored = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert torch.allclose(stored["fusion_classifier"]["pos_weight"], expected)
    fresh = _model(pos_weight="auto")
    _trainer(tmp_path).validate(
        fresh,
        datamodule=_NoTrainLabels(),
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        verbose=False,
    )
    assert torch.allclose(fresh.pos_weight, expected)

    # no training labels and no checkpoint: a clear error instead of silently unweighted loss
    with pytest.raises(InputError, match="pos_weight='auto' has no weights"):
        _trainer(tmp_path).validate(_model(pos_weight="auto"), datamodule=_NoTrainLabels())


class _LearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: dict[int, float] = {}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def test_resume_with_more_epochs_rebuilds_the_schedule(tmp_path: Path) -> None:
    dm = ContractDataModule(n_train=8)  # 2 steps per epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = _LearningRates()
    _trainer(
        tmp_path,
        max_epochs=2,
        enable_checkpointing=True,
        callbacks=[ckpt, first],
        limit_val_batches=0,
    ).fit(_model(warmup_steps=1), datamodule=dm)
    # transformers' warmup starts at 0; cosine over 4 steps
    assert first.lrs[0] == 0.0 and first.lrs[1] == pytest.approx(1e-4)
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # the schedule state stays weights-only
    assert state["fusion_classifier"]["schedule_total_steps"] == 4
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0)

    resumed = _LearningRates()
    with pytest.warns(UserWarning, match=r"planned for 4 steps .* this run has 8 .* rebuilt"):
        _trainer(tmp_path, max_epochs=4, callbacks=[resumed], limit_val_batches=0).fit(
            _model(warmup_steps=1), datamodule=dm, ckpt_path=str(last)
        )
    # the new schedule at step 4 of 8 (warmup 1): half-way down the cosine, not 0
    progress = (4 - 1) / (8 - 1)
    expected = 1e-4 * 0.5 * (1 + math.cos(math.pi * progress))
    assert sorted(resumed.lrs) == [4, 5, 6, 7]
    assert resumed.lrs[4] == pytest.approx(expected)
    assert resumed.lrs[5] < resumed.lrs[4] and resumed.lrs[7] > 0

    # a checkpoint of an earlier version (lengths in the scheduler state) is extended the same way
    legacy = tmp_path / "legacy.ckpt"
    del state["fusion_classifier"]["schedule_total_steps"]
    del state["fusion_classifier"]["schedule_warmup_steps"]
    state["lr_schedulers"][0]["lr_lambdas"] = [{"warmup_steps": 1, "total_steps": 4}]
    torch.save(state, legacy)
    again = _LearningRates()
    with pytest.warns(UserWarning, match=r"planned for 4 steps"):
        _trainer(tmp_path, max_epochs=4, callbacks=[again], limit_val_batches=0).fit(
            _model(warmup_steps=1), datamodule=dm, ckpt_path=str(legacy)
        )
    assert again.lrs[4] == pytest.approx(expected)


def test_test_writes_report_and_prints_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    model = _model(report_dir=str(out), plot_roc=True, min_positives=2)
    _trainer(tmp_path).test(model, datamodule=ContractDataModule(), verbose=False)
    printed = capsys.readouterr().out
    assert f"written to {out.resolve()}" in printed
    for name in ("test_auroc.md", "test_auroc.csv", "roc_curves.png"):
        assert (out / name).is_file() and name in printed
    report = model.test_report
    assert report is not None and report.num_clusters == 12  # 23 rows, 2 per report group
    fixed = [a for a, keep in zip(report.auroc, report.in_mean, strict=True) if keep]
    assert report.mean == pytest.approx(sum(fixed) / len(fixed))


class _Poisoned(FusionClassifier):
    """Returns NaN logits in training at optimizer step ``bad_step``."""

    bad_step = 0

    def forward(self, batch: Any) -> torch.Tensor:
        logits = super().forward(batch)
        if self.training and self.global_step == self.bad_step:
            logits = logits + float("nan")
        return logits


@pytest.mark.parametrize(
    ("log_every", "bad_step", "val_batches", "after"),
    [
        (2, 0, 0, 1),  # read at the next logging step, before optimizer step 1
        (50, 1, 0, 3),  # no logging step in the 4-step epoch: read at the epoch's end
        (50, 1, 2, 3),  # read before validation uses the weights
    ],
)
def test_nan_loss_raises_by_the_next_check_with_the_default(
    tmp_path: Path, log_every: int, bad_step: int, val_batches: int, after: int
) -> None:
    model = _Poisoned(tiny_fusion(), label_names=["a", "b", "c"], bootstrap_resamples=20)
    model.bad_step = bad_step
    seen: list[int] = []
    checked = model.on_validation_start

    def spy() -> None:
        seen.append(model.global_step)
        checked()

    model.on_validation_start = spy  # type: ignore[method-assign]
    trainer = _trainer(
        tmp_path, max_epochs=1, log_every_n_steps=log_every, limit_val_batches=val_batches
    )
    with pytest.raises(
        FloatingPointError,
        match=rf"global step {bad_step} \(epoch 0, batch_idx {bad_step}, ids \[.*\]\); "
        rf"{after} optimizer step\(s\) after it were already taken",
    ):
        trainer.fit(model, datamodule=ContractDataModule(n_train=16, batch_size=4))
    assert trainer.global_step == bad_step + after
    assert seen == ([4] if val_batches else [])


def test_nonfinite_check_interval_one_stops_before_the_step(tmp_path: Path) -> None:
    model = _Poisoned(
        tiny_fusion(), label_names=["a", "b", "c"], nonfinite_check_interval=1, plot_roc=False
    )
    model.bad_step = 2
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(FloatingPointError, match="the optimizer step was not taken"):
        trainer.fit(model, datamodule=ContractDataModule(n_train=16, batch_size=4))
    assert trainer.global_step == 2
