"""Torch ``Dataset`` of (image, tokenized report, labels) samples and the batch collator.

A :class:`FusionSample` is one image + report + label vector, whatever the source layout (raw
NLM XML, MONAI CSV, generic CSV); either modality may be absent (``image_path=None`` or an empty
``text``). :class:`FusionDataset` reads the image on access — decoded straight to ``image_size``
in its own integer type (:func:`~medllama_fusion.data.images.read_resized`), or read back
from an :class:`~medllama_fusion.data.image_cache.ImageCache` — converts it to float and
applies the split's transform (augmentation, normalisation); it returns pre-tokenized ids
(tokenization happens once per data module, not per epoch).
``modalities`` selects what is loaded at all: a text-only dataset never opens an image file, an
image-only dataset never needs report text. :class:`FusionCollator` builds the batch:

- ``input_ids`` / ``attention_mask`` LongTensor [B, L] (right-padded with the pad id) and
  ``text_present`` BoolTensor [B] — only when ``"text"`` is among the modalities; a sample
  without text has an all-padding row and ``text_present=False``;
- ``pixel_values`` FloatTensor [B, 1, H, W] and ``image_present`` BoolTensor [B] — only when
  ``"image"`` is among the modalities; a sample without an image has zeros and
  ``image_present=False``;
- ``labels`` FloatTensor [B, num_labels] (absent when the samples have no labels), ``ids``
  list[str], ``index`` LongTensor [B] (row of the sample in its split's dataset) and
  ``group_index`` LongTensor [B] (integer id of the sample's report group within the dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from medllama_fusion.data.image_cache import ImageCache
from medllama_fusion.data.images import read_resized, to_unit_float
from medllama_fusion.datasets.base import MODALITIES, FusionSample, check_modalities
from medllama_fusion.errors import InputError


class ImageReadError(InputError):
    """An image file could not be decoded while building a batch (names the file and sample).

    A DataLoader worker re-raises it in the main process with the worker's traceback pasted into
    the message; that traceback is cut here so the message stays the one line a user needs.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in message and marker in message:
            where = message.splitlines()[0].removeprefix("Caught ").rstrip(".")
            message = f"{message.rsplit(marker, 1)[1].strip()} (raised {where})"
        super().__init__(message)


class FusionDataset(Dataset[dict[str, Any]]):
    """Map-style dataset over :class:`FusionSample` items with pre-tokenized reports.

    Args:
        samples: The samples.
        input_ids: Token ids per sample (same order as ``samples``), unpadded, already truncated;
            ignored (may be empty) when ``"text"`` is not among ``modalities``.
        transform: Image transform applied to the ``FloatTensor [1, H, W]`` in ``[0, 1]`` read
            from disk (already resized to ``image_size``).
        modalities: What to load: ``("text", "image")``, ``("text",)`` or ``("image",)``.
        image_present: Per sample, whether its image is usable (default: ``image_path`` is set).
        text_present: Per sample, whether its text is usable (default: non-blank text).
        image_size: ``(height, width)`` images are decoded to (and of the zero image given to
            samples without an image).
        image_cache: Keep the resized images on disk and read them from there after the first
            time (:class:`~medllama_fusion.data.image_cache.ImageCache`); ``None``
            decodes every time.

    Raises:
        ValueError: If ``samples`` and ``input_ids`` (or the presence lists) differ in length.
    """

    def __init__(
        self,
        samples: Sequence[FusionSample],
        input_ids: Sequence[Sequence[int]],
        transform: Callable[[Any], torch.Tensor] | None = None,
        modalities: Sequence[str] = MODALITIES,
        image_present: Sequence[bool] | None = None,
        text_present: Sequence[bool] | None = None,
        image_size: tuple[int, int] = (224, 224),
        image_cache: ImageCache | None = None,
    ) -> None:
        self.modalities = check_modalities(modalities)
        self.image_cache = image_cache
        self.samples = list(samples)
        if "text" in self.modalities and len(samples) != len(input_ids):
            raise ValueError(
                f"got {len(samples)} samples but {len(input_ids)} token sequences; pass one "
                "token sequence per sample."
            )
        self.input_ids = [list(ids) for ids in input_ids]
        self.transform = transform
        self.image_size = image_size
        self.image_present = (
            [s.image_path is not None for s in self.samples]
            if image_present is None
            else [bool(v) for v in image_present]
        )
        self.text_present = (
            [s.has_text for s in self.samples]
            if text_present is None
            else [bool(v) for v in text_present]
        )
        if len(self.image_present) != len(self.samples) or len(self.text_present) != len(
            self.samples
        ):
            raise ValueError("image_present/text_present need one entry per sample.")
        groups: dict[str, int] = {}
        self.group_index = [groups.setdefault(s.group_key, len(groups)) for s in self.samples]

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.samples)

    def base_image(self, index: int) -> torch.Tensor | None:
        """Return sample ``index``'s image decoded and resized, before any transform.

        Args:
            index: Sample position.

        Returns:
            ``Tensor [1, H, W]`` (``uint8``, ``uint16`` or ``float32``, see
            :func:`~medllama_fusion.data.images.read_resized`), or ``None`` when the sample
            has no usable image.

        Raises:
            ImageReadError: If the file cannot be decoded (names the file and the sample).
        """
        sample = self.samples[index]
        if not self.image_present[index] or sample.image_path is None:
            return None
        try:
            if self.image_cache is not None:
                return self.image_cache.read(sample.image_path, self.image_size)
            return read_resized(sample.image_path, self.image_size)
        except InputError:
            raise  # already names what to change (e.g. an unwritable image cache)
        except Exception as error:  # any decoder error: name the file and the sample
            raise ImageReadError(
                f"cannot read image {sample.image_path} of sample {sample.id!r} "
                f"({type(error).__name__}: {error}). Re-export or remove the file; with "
                "`verify_images: true` (default) and `bad_input: skip` unreadable images are "
                "dropped at setup."
            ) from error

    def finish_image(self, image: torch.Tensor | None) -> torch.Tensor:
        """Turn a :meth:`base_image` result into the model input (float, transform applied).

        Args:
            image: Output of :meth:`base_image` (``None``: the zero image of a missing one).

        Returns:
            ``FloatTensor [1, H, W]``.
        """
        if image is None:
            height, width = self.image_size
            return torch.zeros((1, height, width), dtype=torch.float32)
        if self.transform is None:
            return to_unit_float(image)
        return self.transform(image)

    def _image(self, index: int) -> torch.Tensor:
        """Load the image of sample ``index`` (zeros when it has none)."""
        return self.finish_image(self.base_image(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one item: ``id``, ``index``, ``group_index``, the loaded modalities, labels."""
        sample = self.samples[index]
        item: dict[str, Any] = {
            "id": sample.id,
            "index": index,
            "group_index": self.group_index[index],
        }
        if "text" in self.modalities:
            present = self.text_present[index]
            ids = torch.tensor(self.input_ids[index] if present else [], dtype=torch.long)
            item["input_ids"] = ids
            item["text_present"] = present
        if "image" in self.modalities:
            item["pixel_values"] = self._image(index)
            item["image_present"] = self.image_present[index]
        if sample.labels is not None:
            item["labels"] = torch.tensor(sample.labels, dtype=torch.float32)
        return item


class FusionCollator:
    """Collate :class:`FusionDataset` items into the batch dict (see the module docstring).

    Args:
        pad_token_id: Id used to right-pad ``input_ids``.
        pad_to_max_length: Pad every batch to ``max_length`` instead of the batch's longest
            sequence (one fixed shape); takes precedence over ``length_buckets``.
        max_length: Fixed length used with ``pad_to_max_length``; the largest bucket.
        length_buckets: Pad each batch to the smallest of these lengths that holds its longest
            sequence (a few fixed shapes, e.g. for ``torch.compile``): increasing positive
            ints up to ``max_length``, which is added as the last bucket when missing. A
            sequence longer than every bucket is padded to its own length.

    Raises:
        ValueError: If ``pad_to_max_length`` is set without a positive ``max_length``, or the
            buckets are not increasing positive ints up to ``max_length``.
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_max_length: bool = False,
        max_length: int | None = None,
        length_buckets: Sequence[int] | None = None,
    ) -> None:
        if pad_to_max_length and (max_length is None or max_length <= 0):
            raise ValueError("pad_to_max_length=True needs a positive max_length.")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_max_length = pad_to_max_length
        self.max_length = max_length
        self.length_buckets = (
            None if length_buckets is None else self.check_buckets(length_buckets, max_length)
        )

    @staticmethod
    def check_buckets(buckets: Sequence[int], max_length: int | None = None) -> tuple[int, ...]:
        """Validate padding lengths and return them with ``max_length`` as the last one.

        Args:
            buckets: Strictly increasing positive ints, none above ``max_length``.
            max_length: The longest sequence; appended when it is not the last bucket.

        Returns:
            The buckets, ending with ``max_length`` when it is given.

        Raises:
            ValueError: For a non-int, non-positive, unsorted or repeated bucket, or one above
                ``max_length``.
        """
        values = list(buckets)
        if (
            not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in values)
            or values != sorted(set(values))
            or (max_length is not None and values and values[-1] > max_length)
        ):
            limit = f" up to max_length={max_length}" if max_length is not None else ""
            raise ValueError(
                f"length_buckets must be strictly increasing positive ints{limit}; got {values}."
            )
        if max_length is not None and (not values or values[-1] != max_length):
            values.append(max_length)
        if not values:
            raise ValueError("length_buckets needs at least one length (or a max_length).")
        return tuple(values)

    def _text(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad the token ids of ``items``."""
        lengths = [int(item["input_ids"].numel()) for item in items]
        width = max(lengths, default=0)
        if self.pad_to_max_length and self.max_length is not None:
            width = max(width, self.max_length)
        width = max(width, 1)  # a batch of text-less samples still has one (padding) column
        if self.length_buckets is not None and not self.pad_to_max_length:
            width = next((b for b in self.length_buckets if b >= width), width)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            input_ids[row, :length] = item["input_ids"]
            attention_mask[row, :length] = 1
        present = torch.tensor([bool(item.get("text_present", True)) for item in items])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "text_present": present}

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack images/labels, right-pad token ids, add presence masks and indices."""
        batch: dict[str, Any] = {}
        if items and "input_ids" in items[0]:
            batch.update(self._text(items))
        if items and "pixel_values" in items[0]:
            batch["pixel_values"] = torch.stack([item["pixel_values"] for item in items])
            batch["image_present"] = torch.tensor(
                [bool(item.get("image_present", True)) for item in items]
            )
        batch["ids"] = [str(item["id"]) for item in items]
        batch["index"] = torch.tensor([int(item.get("index", -1)) for item in items])
        batch["group_index"] = torch.tensor([int(item.get("group_index", -1)) for item in items])
        if items and all("labels" in item for item in items):
            batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch


MODEL_INPUTS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "text_present",
    "image_present",
)
"""The batch keys a fusion model's ``forward`` takes (the rest: ids, labels, indices)."""


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a fusion model's ``forward`` in ``batch``.

    Args:
        batch: A batch from :class:`FusionCollator`.

    Returns:
        ``input_ids``, ``attention_mask`` and ``pixel_values`` (``None`` when the batch has no
        such modality), and the presence masks ``text_present`` / ``image_present`` when the
        batch has them.
    """
    inputs = {key: batch.get(key) for key in MODEL_INPUTS[:3]}
    inputs.update({key: batch[key] for key in MODEL_INPUTS[3:] if batch.get(key) is not None})
    return inputs


__all__ = ["MODEL_INPUTS", "FusionCollator", "FusionDataset", "ImageReadError", "model_inputs"]
