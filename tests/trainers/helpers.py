"""Test helpers: callbacks for subprocess runs, a tiny model and contract batches."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset


class Progress(Callback):
    """Append ``epoch E batch B`` after each training batch and sleep ``delay`` seconds."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path = Path(path)
        self.delay = delay

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(f"epoch {trainer.current_epoch} batch {batch_idx}\n")
        time.sleep(self.delay)


# ---------------------------------------------------------------------------------------------
# In-process building blocks: a tiny fusion model and a data module whose batches follow the
# batch contract (input_ids, attention_mask, pixel_values, text_present, image_present, labels,
# ids, index, group_index), independent of the library's own data modules.
# ---------------------------------------------------------------------------------------------


def _model_takes_presence() -> bool:
    """Whether the fusion model's forward accepts the per-sample presence masks."""
    from medllama_fusion.models import FusionModel

    return "text_present" in inspect.signature(FusionModel.forward).parameters


PRESENCE = _model_takes_presence()
"""Batches carry ``text_present``/``image_present`` only when the model can take them."""
NUM_LABELS = 3
LENGTH = 12
IMAGE = 32


def tiny_fusion(num_labels: int = NUM_LABELS, seed: int = 0) -> torch.nn.Module:
    """The ParallelFusion of tests/conf/tiny.yaml, built in Python (seeded head/adapters)."""
    from medllama_fusion.models import BackboneConfig, ParallelFusion, VisionConfig
    from medllama_fusion.tuners.lora.config import LoraSettings

    torch.manual_seed(seed)
    backbone = BackboneConfig(
        config=dict(
            vocab_size=512,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
        ),
        num_text_layers=1,
    )
    vision = VisionConfig(image_size=IMAGE, patch_size=8, in_channels=1, num_layers=1)
    return ParallelFusion(
        backbone=backbone,
        vision=vision,
        lora=LoraSettings(r=2),
        num_cross_layers=1,
        num_labels=num_labels,
    )


class ContractDataset(Dataset):
    """``n`` seeded samples, two per report group, labels shared within a group.

    The label of class ``c`` leaks into token ``10 + c`` and into the image brightness so that a
    model can learn something; every item carries its row ``index`` and ``group_index``.
    """

    def __init__(self, n: int, seed: int = 0, num_labels: int = NUM_LABELS) -> None:
        gen = torch.Generator().manual_seed(seed)
        groups = (n + 1) // 2
        group_labels = (torch.rand(groups, num_labels, generator=gen) < 0.4).float()
        self.group_index = torch.arange(n) // 2
        self.labels = group_labels[self.group_index]
        self.tokens = torch.randint(20, 512, (n, LENGTH), generator=gen)
        for c in range(num_labels):
            self.tokens[:, c] = torch.where(self.labels[:, c] > 0, 10 + c, self.tokens[:, c])
        self.images = (
            torch.randn(n, 1, IMAGE, IMAGE, generator=gen) + self.labels[:, :1, None, None]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.tokens[i],
            "pixel_values": self.images[i],
            "labels": self.labels[i],
            "id": f"s{i}",
            "index": i,
            "group_index": int(self.group_index[i]),
        }


def contract_collate(items: list[dict[str, Any]], with_index: bool = True) -> dict[str, Any]:
    """Stack items into a batch of the data modules' contract (fixed length, no padding)."""
    batch: dict[str, Any] = {
        "input_ids": torch.stack([it["input_ids"] for it in items]),
        "attention_mask": torch.ones(len(items), LENGTH, dtype=torch.long),
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
        "ids": [it["id"] for it in items],
    }
    if PRESENCE:
        batch["text_present"] = torch.ones(len(items), dtype=torch.bool)
        batch["image_present"] = torch.ones(len(items), dtype=torch.bool)
    if with_index:
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        batch["group_index"] = torch.tensor([it["group_index"] for it in items], dtype=torch.long)
    return batch


def _collate_without_index(items: list[dict[str, Any]]) -> dict[str, Any]:
    return contract_collate(items, with_index=False)


class ContractDataModule(LightningDataModule):
    """Train/val/test/predict loaders over :class:`ContractDataset` (val and test odd-sized)."""

    def __init__(
        self,
        n_train: int = 16,
        n_val: int = 23,
        n_test: int = 23,
        batch_size: int = 4,
        with_index: bool = True,
    ) -> None:
        super().__init__()
        self.sets = {
            "train": ContractDataset(n_train, seed=1),
            "val": ContractDataset(n_val, 2),
            "test": ContractDataset(n_test, seed=3),
        }
        self.batch_size = batch_size
        self.collate = contract_collate if with_index else _collate_without_index

    @property
    def train_labels(self) -> torch.Tensor:
        return self.sets["train"].labels

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.sets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
