"""The one preprocessing record: what turns a report and an image into model input.

Data flow (``B`` batch, ``L`` tokens, ``S`` image side)::

    report ──texts (mask label words)──encode (tokenize, truncate)──► ids ─┐
                                                                           ├─ collator ─► batch
    image ──to_resized (decode at S)──image_transform (normalise)──► [1,S,S]─┘

:class:`Preprocessing` holds every setting of that flow, and nothing else declares them: the data
module builds the complete record from its source (label names) and tokenizer (pad id), every
checkpoint, exported folder and stream carries it (:meth:`Preprocessing.to_dict`), and
``predict``, :class:`~medllama_fusion.inference.FusionPipeline`, ``explain``, ``export`` and the
streaming data module read it back (:meth:`Preprocessing.from_dict`) and use the same
:meth:`~Preprocessing.encode`, :meth:`~Preprocessing.image_transform` and
:meth:`~Preprocessing.collator` as training. A model therefore sees the same numbers for a
sample whichever way it is scored.

:class:`Augmentation` holds the training-time image augmentation, which only training batches
use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from medllama_fusion.data.dataset import FusionCollator
from medllama_fusion.data.images import ImageInput, build_image_transform, to_resized
from medllama_fusion.data.text import (
    MaskMode,
    load_tokenizer,
    mask_label_words,
    tokenize_reports,
)
from medllama_fusion.datasets.base import Modality, check_modalities
from medllama_fusion.errors import InputError, check_choice

__all__ = ["PREPROCESSING_KEY", "Augmentation", "Preprocessing"]

PREPROCESSING_KEY = "preprocessing"
"""Key of the record in checkpoints, exported ``config.json`` files and stream metadata."""


@dataclass(frozen=True)
class Augmentation:
    """Training-time image augmentation (training batches only; never at evaluation).

    Args:
        enabled: A small random affine (rotation, translation, scale) and brightness/contrast
            jitter, seeded per sample by ``(shuffle_seed, epoch, index)``.
        horizontal_flip: Add random horizontal flips (off by default: chest films have a
            laterality, e.g. the heart on the right side is a finding).
    """

    enabled: bool = True
    horizontal_flip: bool = False


@dataclass(frozen=True)
class Preprocessing:
    """Every setting between a sample and the model's input (see the module docstring).

    Set the first ten fields (``--data.init_args.preprocessing.max_length 128``); the data module
    fills the last two (``label_names`` from its source, ``pad_token_id`` from the tokenizer).

    Args:
        tokenizer: Tokenizer folder, ``.gguf`` file or hub id (offline, see
            :func:`~medllama_fusion.data.text.load_tokenizer`). ``None``: the model's backbone
            (its ``pretrained`` source) when the command line builds both, else the source's
            own tokenizer (the demo data's).
        max_length: Longest report in tokens; longer reports are truncated.
        image_size: Image side after resizing (the paper uses 224). The model's vision input
            size follows it on the command line.
        image_mean: Normalisation mean.
        image_std: Normalisation standard deviation.
        mask_label_words: Remove label evidence from the reports (text-leakage ablation), as
            ``mask_mode`` says.
        mask_mode: ``"words"``: the label names and synonyms only (cue words such as
            "enlarged" stay, a weak control); ``"sentence"``: whole sentences naming a label,
            a synonym or a cue word.
        modalities: What batches carry: ``["text", "image"]``, ``["text"]`` (no image file is
            opened) or ``["image"]`` (no report text is needed).
        pad_to_max_length: Pad every batch to ``max_length`` instead of its longest report.
        length_buckets: Pad each batch to the smallest of a few fixed lengths that holds its
            longest report: ``"auto"`` = powers of two from 32 up to ``max_length`` when the
            model compiles (``model.init_args.compile``), else the longest report; a list of
            increasing lengths = always those (``max_length`` is added as the last); ``None`` =
            never. ``pad_to_max_length`` takes precedence. Padding never changes a prediction.

    Attributes:
        label_names: Output label names, in order (from the data source).
        pad_token_id: Id that pads ``input_ids`` (from the tokenizer).
    """

    tokenizer: str | None = None
    max_length: int = 256
    image_size: int = 224
    image_mean: float = 0.5
    image_std: float = 0.5
    mask_label_words: bool = False
    mask_mode: MaskMode = "words"
    modalities: tuple[Modality, ...] = ("text", "image")
    pad_to_max_length: bool = False
    length_buckets: list[int] | Literal["auto"] | None = "auto"
    label_names: tuple[str, ...] = field(default=(), init=False)
    pad_token_id: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise InputError(f"preprocessing.max_length must be >= 1; got {self.max_length}.")
        if self.image_size < 1:
            raise InputError(f"preprocessing.image_size must be >= 1; got {self.image_size}.")
        if self.image_std <= 0:
            raise InputError(f"preprocessing.image_std must be > 0; got {self.image_std}.")
        check_choice(self.mask_mode, MaskMode, "preprocessing.mask_mode")
        object.__setattr__(self, "modalities", check_modalities(self.modalities))
        buckets = self.length_buckets
        if isinstance(buckets, str) and buckets != "auto":
            raise InputError(
                f"preprocessing.length_buckets must be 'auto', a list of lengths or null; got "
                f"{buckets!r}."
            )
        if isinstance(buckets, Sequence) and not isinstance(buckets, str):
            try:
                FusionCollator.check_buckets(list(buckets), self.max_length)
            except ValueError as error:
                raise InputError(f"preprocessing.{error}") from None

    # ------------------------------------------------------------------ the complete record
    def complete(
        self,
        *,
        tokenizer: str | None = None,
        label_names: Sequence[str] | None = None,
        pad_token_id: int | None = None,
    ) -> Preprocessing:
        """Return a copy with the tokenizer, label names or pad id filled in (others kept).

        Args:
            tokenizer: The tokenizer spec (a local path is made absolute when it exists).
            label_names: The source's label names.
            pad_token_id: The tokenizer's pad id.

        Returns:
            The new record.
        """
        spec = self.tokenizer if tokenizer is None else tokenizer
        if spec is not None and Path(spec).expanduser().exists():
            spec = str(Path(spec).expanduser().resolve())
        new = dataclasses.replace(self, tokenizer=spec)
        names = self.label_names if label_names is None else tuple(str(n) for n in label_names)
        pad = self.pad_token_id if pad_token_id is None else int(pad_token_id)
        object.__setattr__(new, "label_names", names)
        object.__setattr__(new, "pad_token_id", pad)
        if "loaded_tokenizer" in self.__dict__ and tokenizer is None:  # the same tokenizer
            new.__dict__["loaded_tokenizer"] = self.__dict__["loaded_tokenizer"]
        return new

    def with_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> Preprocessing:
        """Return a copy that uses an already loaded tokenizer (e.g. one built in memory).

        Args:
            tokenizer: The tokenizer (it needs a pad token).

        Returns:
            The record, with :attr:`pad_token_id` from the tokenizer and ``tokenizer`` set to its
            ``name_or_path``.
        """
        new = self.complete(pad_token_id=tokenizer.pad_token_id)
        object.__setattr__(
            new, "tokenizer", str(getattr(tokenizer, "name_or_path", "") or "") or None
        )
        new.__dict__["loaded_tokenizer"] = tokenizer
        return new

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON types (what checkpoints, exports and streams store)."""
        data = dataclasses.asdict(self)
        data["modalities"] = list(self.modalities)
        data["label_names"] = list(self.label_names)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the stored record") -> Preprocessing:
        """Rebuild a record written by :meth:`to_dict`.

        Args:
            data: The stored dict.
            source: Where it came from, named in errors.

        Returns:
            The record.

        Raises:
            InputError: For unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"{source} has unknown preprocessing settings {unknown}; it was written by "
                "another version of medllama-fusion."
            )
        init = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.init and f.name in data}
        if "modalities" in init:
            init["modalities"] = tuple(init["modalities"])
        record = cls(**init)
        return record.complete(
            label_names=data.get("label_names") or (), pad_token_id=data.get("pad_token_id")
        )

    # ------------------------------------------------------------------ text
    @cached_property
    def loaded_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded on first use)."""
        if self.tokenizer is None:
            raise InputError(
                "preprocessing.tokenizer is not set; pass a tokenizer folder, .gguf file or hub "
                "id (--data.init_args.preprocessing.tokenizer)."
            )
        return load_tokenizer(self.tokenizer)

    def texts(self, reports: Sequence[str]) -> list[str]:
        """The report texts the tokenizer sees (label evidence masked when asked).

        Args:
            reports: Report texts.

        Returns:
            One text per report.
        """
        if not self.mask_label_words:
            return list(reports)
        return [mask_label_words(text, self.label_names, mode=self.mask_mode) for text in reports]

    def encode(
        self, reports: Sequence[str], cache_dir: str | Path | None = None
    ) -> list[list[int]]:
        """Token ids of each report: :meth:`texts`, then tokenized and truncated, unpadded.

        Args:
            reports: Report texts.
            cache_dir: Keep the tokenized tensors in this folder and reuse them
                (:func:`~medllama_fusion.data.text.tokenize_reports`).

        Returns:
            At most ``max_length`` ids per report.
        """
        if not reports:
            return []
        encoded = tokenize_reports(
            self.loaded_tokenizer,
            self.texts(reports),
            max_length=self.max_length,
            padding="longest",
            cache_dir=cache_dir,
        )
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        rows = encoded["input_ids"].tolist()
        return [row[: int(length)] for row, length in zip(rows, lengths, strict=True)]

    # ------------------------------------------------------------------ images
    def image_transform(
        self, train: bool = False, augmentation: Augmentation | None = None
    ) -> Callable[[Any], torch.Tensor]:
        """The transform from a resized image to the normalised model input ``[1, S, S]``.

        Args:
            train: Training batches (augmented when ``augmentation.enabled``).
            augmentation: The training augmentation; ``None`` = none.

        Returns:
            The transform.
        """
        augment = augmentation if augmentation is not None else Augmentation(enabled=False)
        return build_image_transform(
            self.image_size,
            train=train,
            mean=self.image_mean,
            std=self.image_std,
            augment=augment.enabled,
            horizontal_flip=augment.horizontal_flip,
        )

    def image(self, image: ImageInput) -> torch.Tensor:
        """The evaluation input ``FloatTensor [1, S, S]`` of one image in any form.

        Args:
            image: A path, a PIL image, a NumPy array or a tensor
                (:func:`~medllama_fusion.data.images.to_resized`).

        Returns:
            The normalised image.
        """
        return self.image_transform()(to_resized(image, self.image_size))

    # ------------------------------------------------------------------ batches
    def padded_lengths(self, model_compiles: bool = False) -> list[int] | None:
        """The fixed lengths text batches are padded to, or ``None`` (each batch's longest).

        Args:
            model_compiles: Whether the model is compiled (``length_buckets: auto`` then pads
                to powers of two).

        Returns:
            Increasing lengths ending with ``max_length``, or ``None``.
        """
        if self.pad_to_max_length:
            return [self.max_length]
        buckets = self.length_buckets
        if buckets is None:
            return None
        if isinstance(buckets, str):  # "auto"
            if not model_compiles:
                return None
            powers = [
                2**k for k in range(5, self.max_length.bit_length()) if 2**k < self.max_length
            ]
            return [*powers, self.max_length]
        return list(FusionCollator.check_buckets(list(buckets), self.max_length))

    def collator(self, model_compiles: bool = False) -> FusionCollator:
        """The batch collator (pads with :attr:`pad_token_id`, see :meth:`padded_lengths`).

        Args:
            model_compiles: Whether the model is compiled.

        Returns:
            The collator.

        Raises:
            InputError: When the record has no pad id yet and the tokenizer gives none.
        """
        pad = self.pad_token_id
        if pad is None and "text" in self.modalities:
            pad = self.loaded_tokenizer.pad_token_id
            if pad is None:
                raise InputError(
                    f"tokenizer {self.tokenizer!r} has no pad token id; save it with a pad token."
                )
        return FusionCollator(
            int(pad or 0),
            self.pad_to_max_length,
            self.max_length,
            length_buckets=self.padded_lengths(model_compiles),
        )
