"""A compiled run pads reports to fixed length buckets and compiles once per bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
from lightning.pytorch import Callback, LightningModule, Trainer
from torch._dynamo.testing import CompileCounterWithBackend

from medllama_fusion.data.dataset import FusionCollator
from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.errors import InputError
from medllama_fusion.trainers import FusionClassifier
from tests.datamodules.build import openi_datamodule

from .conftest import cli_args
from .helpers import tiny_fusion


class _Lengths(Callback):
    """Record each training batch's padded width and its longest report."""

    def __init__(self) -> None:
        self.widths: list[int] = []
        self.longest: list[int] = []
        self.frames: list[int] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.widths.append(int(batch["input_ids"].shape[1]))
        self.longest.append(int(batch["attention_mask"].sum(1).max()))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        backend = pl_module.hparams["compile_backend"]
        self.frames.append(backend.frame_count)


def _compiled_fit(
    root: Path, tmp_path: Path, length_buckets: Any
) -> tuple[_Lengths, FusionDataModule]:
    """Fit 8 constant-size batches of the demo data with an eager compile counter."""
    torch._dynamo.reset()
    data = openi_datamodule(
        root,
        layout="csv",
        max_length=64,
        image_size=32,
        batch_size=8,
        verify_images=False,
        drop_last=True,  # one batch size: only the length changes the shapes
        length_buckets=length_buckets,
        model_compiles=True,  # the command line links it from model.init_args.compile
    )
    model = FusionClassifier(
        tiny_fusion(num_labels=14),
        label_names=data.label_names,
        compile=True,
        compile_backend=CompileCounterWithBackend("eager"),  # type: ignore[arg-type]
        bootstrap_resamples=0,
        plot_roc=False,
    )
    lengths = _Lengths()
    Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=8,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[lengths],
        default_root_dir=str(tmp_path),
    ).fit(model, datamodule=data)
    torch._dynamo.reset()
    return lengths, data


@pytest.mark.parametrize(
    ("length_buckets", "expected"),
    [("auto", [32, 64]), ([40, 44, 48, 52, 56, 60], [40, 44, 48, 52, 56, 60, 64])],
)
def test_compiled_run_compiles_at_most_once_per_bucket(
    demo_root: Path, tmp_path: Path, length_buckets: Any, expected: list[int]
) -> None:
    lengths, data = _compiled_fit(demo_root, tmp_path, length_buckets)
    assert data.padded_lengths() == expected
    used = set(lengths.widths)
    assert used <= set(expected)
    assert len(set(lengths.longest)) > len(used)  # many report lengths, few shapes
    per_bucket = lengths.frames[0]  # every compiled block once, for the first bucket
    assert per_bucket > 0
    assert lengths.frames[-1] <= per_bucket * len(used)


def test_without_buckets_each_new_length_costs_compilations(
    demo_root: Path, tmp_path: Path
) -> None:
    bucketed, _ = _compiled_fit(demo_root, tmp_path / "auto", "auto")
    assert set(bucketed.widths) == {64}  # every batch's longest report is above 32 tokens
    free, data = _compiled_fit(demo_root, tmp_path / "none", None)
    assert data.padded_lengths() is None and len(set(free.widths)) > 1
    assert free.frames[-1] > bucketed.frames[-1]  # recompiled for a new length


def _items(*lengths: int) -> list[dict[str, Any]]:
    return [
        {"id": str(i), "input_ids": torch.arange(1, n + 1), "text_present": n > 0}
        for i, n in enumerate(lengths)
    ]


def test_collator_pads_to_the_smallest_bucket_that_fits() -> None:
    collate = FusionCollator(0, max_length=64, length_buckets=[16, 32])
    assert collate.length_buckets == (16, 32, 64)  # max_length is the last bucket
    assert collate(_items(3, 9))["input_ids"].shape == (2, 16)
    assert collate(_items(16))["input_ids"].shape == (1, 16)
    batch = collate(_items(17, 5))
    assert batch["input_ids"].shape == (2, 32)
    assert batch["attention_mask"].sum(1).tolist() == [17, 5]
    assert collate(_items(0, 0))["input_ids"].shape == (2, 16)  # text-less batch: one bucket
    assert collate(_items(40))["input_ids"].shape == (1, 64)
    fixed = FusionCollator(0, pad_to_max_length=True, max_length=64, length_buckets=[16])
    assert fixed(_items(3))["input_ids"].shape == (1, 64)  # pad_to_max_length wins


@pytest.mark.parametrize("buckets", [[32, 16], [16, 16], [0, 8], [8, 128], [8.5]])
def test_collator_rejects_bad_buckets(buckets: list[Any]) -> None:
    with pytest.raises(ValueError, match="length_buckets"):
        FusionCollator(0, max_length=64, length_buckets=buckets)


def test_data_module_buckets_only_when_the_model_compiles() -> None:
    def lengths(compiles: bool = False, **settings: Any) -> list[int] | None:
        return Preprocessing(**settings).padded_lengths(model_compiles=compiles)

    assert lengths(max_length=256) is None  # eager model: pad to the longest report
    assert lengths(True, max_length=256) == [32, 64, 128, 256]
    assert lengths(True, max_length=48) == [32, 48]
    assert lengths(True, max_length=20) == [20]
    assert lengths(length_buckets=[100]) == [100, 256]
    assert lengths(True, length_buckets=None) is None
    assert lengths(True, max_length=48, pad_to_max_length=True) == [48]
    for bad in ("always", [300], [64, 32]):
        with pytest.raises(InputError, match="length_buckets"):
            Preprocessing(length_buckets=bad)


@pytest.mark.parametrize("compiles", [False, True])
def test_the_command_line_links_compile_to_the_data_module(
    compiles: bool,
    demo_root: Path,
    tiny_conf: Path,
    tmp_path: Path,
) -> None:
    from medllama_fusion.cli.main import cli_main

    flag = "true" if compiles else "false"
    args = cli_args("fit", tiny_conf, demo_root, tmp_path, "--model.init_args.compile", flag)
    data = cli_main([*args, "--trainer.max_epochs", "0"]).datamodule
    assert data.model_compiles is compiles
    assert data.padded_lengths() == ([32, 48] if compiles else None)
