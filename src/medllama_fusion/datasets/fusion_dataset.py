"""Torch ``Dataset`` of (image, tokenized report, labels) samples and the batch collator.

A :class:`FusionSample` is one image + report + label vector, whatever the source layout (raw
NLM XML, MONAI CSV, generic CSV). :class:`FusionDataset` reads the image on access (with the
split's transform) and returns pre-tokenized ids (tokenization happens once per data module,
not per epoch). :class:`FusionCollator` builds the SPEC batch:

``input_ids`` LongTensor [B, L] (right-padded with the pad id), ``attention_mask`` LongTensor
[B, L], ``pixel_values`` FloatTensor [B, 1, H, W], ``labels`` FloatTensor [B, num_labels]
(absent when the samples have no labels) and ``ids`` list[str].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medllama_fusion.datasets.images import load_image


@dataclass(frozen=True)
class FusionSample:
    """One image-report sample.

    Attributes:
        id: Unique sample id (image id for OpenI; row id for CSVs).
        image_path: Path of the image file.
        text: Report text, already formatted (e.g. ``FINDINGS : ... IMPRESSION : ...``).
        labels: Label vector in {0, 1}, ordered like the data module's ``label_names``;
            ``None`` for unlabelled (predict-only) data.
        group: Grouping key for splitting (the report id) so that the images of one report
            never land in different splits. Defaults to ``id`` when empty.
    """

    id: str
    image_path: Path
    text: str
    labels: tuple[float, ...] | None = None
    group: str = ""

    @property
    def group_key(self) -> str:
        """Return the split grouping key (``group`` or, if empty, ``id``)."""
        return self.group or self.id


class FusionDataset(Dataset[dict[str, Any]]):
    """Map-style dataset over :class:`FusionSample` items with pre-tokenized reports.

    Args:
        samples: The samples.
        input_ids: Token ids per sample (same order as ``samples``), unpadded, already truncated.
        transform: Image transform applied to the ``FloatTensor [1, H, W]`` read from disk.

    Raises:
        ValueError: If ``samples`` and ``input_ids`` differ in length.
    """

    def __init__(
        self,
        samples: Sequence[FusionSample],
        input_ids: Sequence[Sequence[int]],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(samples) != len(input_ids):
            raise ValueError(
                f"got {len(samples)} samples but {len(input_ids)} token sequences; pass one "
                "token sequence per sample."
            )
        self.samples = list(samples)
        self.input_ids = [list(ids) for ids in input_ids]
        self.transform = transform

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return ``{"pixel_values", "input_ids", "attention_mask", "labels"?, "id"}``."""
        sample = self.samples[index]
        ids = torch.tensor(self.input_ids[index], dtype=torch.long)
        item: dict[str, Any] = {
            "id": sample.id,
            "pixel_values": load_image(sample.image_path, self.transform),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
        }
        if sample.labels is not None:
            item["labels"] = torch.tensor(sample.labels, dtype=torch.float32)
        return item


class FusionCollator:
    """Collate :class:`FusionDataset` items into the SPEC batch dict.

    Args:
        pad_token_id: Id used to right-pad ``input_ids``.
        pad_to_max_length: Pad every batch to ``max_length`` instead of the batch's longest
            sequence (fixed shapes, e.g. for ``torch.compile``).
        max_length: Fixed length used with ``pad_to_max_length``.

    Raises:
        ValueError: If ``pad_to_max_length`` is set without a positive ``max_length``.
    """

    def __init__(
        self, pad_token_id: int, pad_to_max_length: bool = False, max_length: int | None = None
    ) -> None:
        if pad_to_max_length and (max_length is None or max_length <= 0):
            raise ValueError("pad_to_max_length=True needs a positive max_length.")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_max_length = pad_to_max_length
        self.max_length = max_length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack images/labels and right-pad token ids and attention masks."""
        lengths = [int(item["input_ids"].numel()) for item in items]
        width = max(lengths, default=0)
        if self.pad_to_max_length and self.max_length is not None:
            width = max(width, self.max_length)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            input_ids[row, :length] = item["input_ids"]
            attention_mask[row, :length] = 1
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "ids": [str(item["id"]) for item in items],
        }
        if items and all("labels" in item for item in items):
            batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch


__all__ = ["FusionCollator", "FusionDataset", "FusionSample"]
