"""``DemoDataset``: the demo data written into an empty folder on first use, then read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.datasets.labels import OPENI_LABELS
from medllama_fusion.demo import DemoDataset


def make_dm(root: Path, **source: Any) -> FusionDataModule:
    return FusionDataModule(
        DemoDataset(root, **source),
        preprocessing=Preprocessing(image_size=32, max_length=48),
        loader=LoaderSettings(batch_size=4),
    )


def test_demo_true_writes_data_into_empty_root_and_yields_a_batch(tmp_path: Path) -> None:
    root = tmp_path / "new" / "demo_data"
    dm = make_dm(root, num_reports=12, layout="csv")
    assert dm.label_names == list(OPENI_LABELS) and dm.num_labels == 14  # before any data
    assert not dm.source.has_data()
    dm.prepare_data()
    assert dm.source.has_data() and (root / "tokenizer").is_dir()
    assert sorted(p.name for p in root.parent.iterdir()) == ["demo_data"]  # no staging left
    stamp = (root / "train.csv").stat().st_mtime_ns
    dm.prepare_data()  # data present: not rewritten
    assert (root / "train.csv").stat().st_mtime_ns == stamp
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 1, 32, 32) and batch["labels"].shape == (4, 14)
    labels = dm.train_labels
    assert labels.shape == (len(dm.samples["train"]), 14)
    assert torch.equal(labels, torch.tensor([s.labels for s in dm.samples["train"]]))
    again = tmp_path / "again"
    make_dm(again, num_reports=12, layout="csv").prepare_data()
    assert (again / "train.csv").read_bytes() == (root / "train.csv").read_bytes()  # seeded


def test_demo_refuses_non_empty_root_without_data(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    dm = make_dm(tmp_path, num_reports=12)
    dm.prepare_data()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    with pytest.raises(FileNotFoundError, match="only into a missing or empty folder"):
        dm.setup()
    with pytest.raises(ValueError, match="num_reports"):
        make_dm(tmp_path, num_reports=2)
