"""``StreamingDataModule``: batches from a stream written by ``medllama-fusion optimize``.

A stream (:mod:`medllama_fusion.data.streaming`) holds every split already checked, split,
tokenized and resized, so this data module does no setup work: it reads the label names, image
size, ``max_length``, modalities and pad token id from the stream's ``medllama_fusion.json``
and serves the splits through :class:`litdata.StreamingDataLoader` s. LitData shards each split
across nodes, ranks and DataLoader workers by itself (no ``DistributedSampler``; Lightning does
not add one to an iterable dataset), downloads a remote stream's chunks ahead of use into a
local cache, and shuffles the training split with a seeded order that changes every epoch.
Augmentation runs at read time, every epoch, seeded per sample by ``(shuffle_seed, epoch,
index)``. The training loader's position is saved in checkpoints as this data module's state,
so a run resumes mid-epoch.

Batches have the format of every other data module (see
:mod:`medllama_fusion.data.dataset`); validation and test batches equal those of the
data module that wrote the stream.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from medllama_fusion.data.images import build_image_transform
from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datasets.base import check_modalities
from medllama_fusion.errors import InputError

_STATE_KEY = "stream_train_loader"


class _Empty(Dataset[Any]):
    """The dataset of a split the stream does not hold."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)


class StreamingDataModule(FusionDataModule):
    """Data module over a stream written by ``medllama-fusion optimize``; see the module docstring.

    Arguments that shaped the stored data (``label_names``, ``image_size``, ``max_length``,
    ``tokenizer``) default to the stream's values; a different value raises. The split, check
    and tokenization arguments of the shared set (``split_sizes``, ``bad_input``,
    ``missing_modality``, ``mask_label_words``, ``image_cache_dir``, ...) were applied when the
    stream was written and have no effect here; the loader and augmentation arguments
    (``batch_size``, ``num_workers``, ``augment``, ``horizontal_flip``, ``image_mean``,
    ``image_std``, ``shuffle_seed``, ``drop_last``, ``pad_to_max_length``, ...) apply as usual.

    Args:
        input_dir: The stream's root folder or ``s3://``/``gs://`` URL (what ``optimize`` wrote
            to ``--output_dir``).
        tokenizer: Tokenizer of the stream (default: the one it was written with).
        label_names: Label names (default: the stream's; a different list raises).
        max_length: Token limit (default: the stream's; a different value raises).
        image_size: Image side (default: the stream's; a different value raises).
        modalities: Modalities to serve (default: the stream's; a subset of them is allowed).
        chunk_cache_dir: Local folder for the chunks of a remote stream (default: LitData's
            cache).
        **kwargs: The other shared data arguments of
            :class:`~medllama_fusion.datamodules.base.FusionDataModule` (``batch_size``,
            ``num_workers``, ``augment``, ``shuffle_seed``, ...).

    Raises:
        InputError: When ``input_dir`` is not a stream of this library, LitData is missing, or
            an argument conflicts with the stream.
    """

    def __init__(
        self,
        input_dir: str,
        tokenizer: str | None = None,
        label_names: list[str] | None = None,
        max_length: int | None = None,
        image_size: int | None = None,
        modalities: list[str] | None = None,
        chunk_cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        from medllama_fusion.data.streaming import read_stream_metadata, require_litdata

        require_litdata()
        self.input_dir = str(input_dir)
        meta = read_stream_metadata(self.input_dir)
        self.stream_metadata = meta
        stored_labels = [str(name) for name in meta["label_names"]]
        stored_length, stored_size = int(meta["max_length"]), int(meta["image_size"])
        given: list[tuple[str, object, object]] = [
            ("label_names", None if label_names is None else list(label_names), stored_labels),
            ("max_length", max_length, stored_length),
            ("image_size", image_size, stored_size),
        ]
        for name, value, saved in given:
            if value is not None and value != saved:
                raise InputError(
                    f"{name}={value!r} conflicts with the stream {self.input_dir}, written with "
                    f"{name}={saved!r}; leave {name} unset or write a new stream with "
                    "`medllama-fusion optimize`."
                )
        stream_modalities = check_modalities(meta["modalities"])
        served = stream_modalities if modalities is None else check_modalities(modalities)
        if not set(served) <= set(stream_modalities):
            raise InputError(
                f"modalities={list(served)} asks for more than the stream {self.input_dir} holds "
                f"({list(stream_modalities)}); serve a subset or write a new stream."
            )
        if kwargs.get("mask_label_words") and not meta.get("mask_label_words"):
            raise InputError(
                f"mask_label_words=true, but the stream {self.input_dir} was tokenized without "
                "label masking; write a stream from a config with mask_label_words: true."
            )
        super().__init__(
            tokenizer=tokenizer or str(meta["tokenizer"]),
            source=None,
            label_names=stored_labels,
            max_length=stored_length,
            image_size=stored_size,
            modalities=list(served),
            **kwargs,
        )
        self.mask_label_words = bool(meta.get("mask_label_words", False))
        self.mask_mode = str(meta.get("mask_mode", self.mask_mode))
        self.stream_cache_dir = chunk_cache_dir
        self.counts: dict[str, int] = {k: int(v) for k, v in meta["counts"].items()}
        self._stream_train_loader: Any = None
        self._stream_train_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ what the stream knows

    @property
    def pad_token_id(self) -> int:
        """Padding id stored with the stream (the tokenizer is not loaded for it)."""
        return int(self.stream_metadata["pad_token_id"])

    @property
    def train_labels(self) -> torch.Tensor:
        """Training labels ``[N, num_labels]`` stored with the stream (for ``pos_weight: auto``).

        Raises:
            InputError: When the stream's training split has unlabelled samples.
        """
        rows = self.stream_metadata.get("train_labels")
        if rows is None:
            raise InputError(
                f"the training split of the stream {self.input_dir} has unlabelled samples; "
                "every training sample needs its label columns."
            )
        if not rows:
            return torch.zeros((0, self.num_labels), dtype=torch.float32)
        return torch.tensor(rows, dtype=torch.float32)

    def source_description(self) -> str:
        """Describe the stream (and the data it was written from) for messages."""
        return f"stream {self.input_dir} (from {self.stream_metadata.get('source', '?')})"

    def setup(self, stage: str | None = None) -> None:
        """Nothing to prepare: the stream is already checked, split and tokenized.

        Args:
            stage: Lightning stage (unused).
        """

    # ------------------------------------------------------------------ loaders

    def _stream_loader(self, split: str) -> DataLoader[Any]:
        """Build the ``StreamingDataLoader`` of ``split`` (an empty loader for an empty split)."""
        from medllama_fusion.data.streaming import StreamItemReader, open_stream

        train = split == "train"
        if self.counts.get(split, 0) == 0:
            rank_zero_warn(f"the {split} split of {self.source_description()} is empty.")
            return DataLoader(_Empty(), batch_size=self.batch_size, collate_fn=self.collator())
        import litdata

        transform = build_image_transform(
            self.image_size,
            train=train,
            mean=self.image_mean,
            std=self.image_std,
            augment=self.augment,
            horizontal_flip=self.horizontal_flip,
        )
        reader = StreamItemReader(
            self.modalities,
            transform,
            (self.image_size, self.image_size),
            seed=self.shuffle_seed if train and self.augment else None,
        )
        dataset = open_stream(
            self.input_dir,
            split,
            reader,
            shuffle=train,
            seed=self.shuffle_seed,
            drop_last=(True if self.drop_last else None) if train else False,
            cache_dir=self.stream_cache_dir,
        )
        loader: DataLoader[Any] = litdata.StreamingDataLoader(dataset, **self.loader_options())
        return loader

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training batches, resumable mid-epoch (augmented at read time)."""
        loader = self._stream_loader("train")
        if hasattr(loader, "load_state_dict"):
            self._stream_train_loader = loader
            if self._stream_train_state is not None:
                loader.load_state_dict(self._stream_train_state)
                self._stream_train_state = None
        return loader

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches, in the stream's order."""
        return self._stream_loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches, in the stream's order."""
        return self._stream_loader("test")

    def predict_dataloader(self) -> DataLoader[Any]:
        """Prediction batches (the test split)."""
        return self._stream_loader("test")

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the training loader's position (``{}`` before it exists)."""
        if self._stream_train_loader is None:
            return {}
        return {_STATE_KEY: self._stream_train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's position (now, or when the loader is built).

        Args:
            state_dict: A dict from :meth:`state_dict`.

        Raises:
            InputError: For the state of another data module's loader.
        """
        if not state_dict:
            return
        state = state_dict.get(_STATE_KEY)
        if not state:
            raise InputError(
                f"the checkpoint's data state (keys {sorted(state_dict)}) was not written by "
                "StreamingDataModule; resume a streaming run from its own checkpoints, or start "
                "it with the checkpoint's weights only."
            )
        if self._stream_train_loader is not None:
            self._stream_train_loader.load_state_dict(state)
        else:
            self._stream_train_state = dict(state)


__all__ = ["StreamingDataModule"]
