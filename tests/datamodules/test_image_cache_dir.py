"""``image_cache_dir``: the same batches as decoding, and no decoding after the first epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.data import image_cache
from medllama_fusion.data.images import read_resized
from medllama_fusion.datamodules import OpenIDataModule
from medllama_fusion.errors import InputError
from tests.datamodules.build import openi_datamodule
from tests.datasets.monai_fixture import write_monai_root


def batches(dm: OpenIDataModule, split: str) -> list[dict[str, Any]]:
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return list(loader)


def test_cached_batches_equal_decoded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_monai_root(tmp_path)
    options: dict[str, Any] = {"image_size": 24, "batch_size": 8, "max_length": 32}
    plain = openi_datamodule(root, **options)
    cached = openi_datamodule(root, image_cache_dir=str(tmp_path / "cache"), **options)
    plain.setup("fit")
    cached.setup("fit")
    decoded: list[str] = []

    def counting(path: str | Path, size: Any) -> torch.Tensor:
        decoded.append(str(path))
        return read_resized(path, size)

    monkeypatch.setattr(image_cache, "read_resized", counting)
    for split in ("train", "val"):  # train: augmented, seeded per (epoch, sample)
        expected = batches(plain, split)
        for epoch in range(2):
            before = len(decoded)
            got = batches(cached, split)
            for one, two in zip(expected, got, strict=True):
                assert one["ids"] == two["ids"]
                assert torch.equal(one["pixel_values"], two["pixel_values"])
            if epoch == 1:
                assert len(decoded) == before  # second pass: nothing decoded
    assert len(decoded) == len(cached.datasets["train"]) + len(cached.datasets["val"])


def test_cache_folder_that_is_a_file_stops_setup(tmp_path: Path) -> None:
    root = write_monai_root(tmp_path)
    (tmp_path / "taken").write_text("a file")
    dm = openi_datamodule(root, image_size=24, image_cache_dir=str(tmp_path / "taken"))
    with pytest.raises(InputError, match=r"image_cache_dir=.*taken"):
        dm.setup("fit")
