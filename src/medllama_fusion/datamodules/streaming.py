"""``StreamingDataModule``: batches from a stream written by ``medllama-fusion optimize``.

A stream (:mod:`medllama_fusion.data.streaming`) holds every split already curated, split,
tokenized and resized, with the :class:`~medllama_fusion.data.preprocessing.Preprocessing` record
of the data module that wrote it. This data module therefore takes only what a stream leaves
open, the loader, the augmentation and which of the stream's modalities to serve, and serves the
splits through :class:`litdata.StreamingDataLoader` s. LitData shards each split across nodes,
ranks and DataLoader workers by itself (no ``DistributedSampler``; Lightning does not add one to
an iterable dataset), downloads a remote stream's chunks ahead of use into a local cache, and
shuffles the training split with a seeded order that changes every epoch. Augmentation runs at
read time, every epoch, seeded per sample by ``(shuffle_seed, epoch, index)``. The training
loader's position is saved in checkpoints as this data module's state, so a run resumes
mid-epoch.

Batches have the format of every other data module (see :mod:`medllama_fusion.data.dataset`);
validation and test batches equal those of the data module that wrote the stream, and a model
trained here carries the stream's preprocessing record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import PREPROCESSING_KEY, Augmentation, Preprocessing
from medllama_fusion.datamodules.base import BatchDataModule, train_label_tensor
from medllama_fusion.datasets.base import Modality, check_modalities
from medllama_fusion.errors import InputError

__all__ = ["StreamingDataModule"]

_STATE_KEY = "stream_train_loader"


class _Empty(Dataset[Any]):
    """The dataset of a split the stream does not hold."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)


class StreamingDataModule(BatchDataModule):
    """Data module over a stream written by ``medllama-fusion optimize``; see the module docstring.

    Args:
        input_dir: The stream's root folder or ``s3://``/``gs://`` URL (what ``optimize`` wrote
            to ``--output_dir``).
        loader: Batch size, workers and the shuffle seed.
        augmentation: Training-time image augmentation (applied at read time).
        modalities: Serve only these of the stream's modalities (e.g. ``[text]`` from a stream
            of both); ``None`` = all of them.
        chunk_cache_dir: Local folder for the chunks of a remote stream (default: LitData's
            cache).
        model_compiles: Whether the model is compiled (pads to fixed lengths under
            ``length_buckets: auto``); the command line sets it from ``model.init_args.compile``.

    Raises:
        InputError: When ``input_dir`` is not a stream of this library, LitData is missing, or
            ``modalities`` asks for more than the stream holds.
    """

    def __init__(
        self,
        input_dir: str,
        loader: LoaderSettings = LoaderSettings(),
        augmentation: Augmentation = Augmentation(),
        modalities: Sequence[Modality] | None = None,
        chunk_cache_dir: str | None = None,
        model_compiles: bool = False,
    ) -> None:
        super().__init__(_STATE_KEY)
        from medllama_fusion.data.streaming import read_stream_metadata, require_litdata

        require_litdata()
        self.input_dir = str(input_dir)
        meta = read_stream_metadata(self.input_dir)
        self.stream_metadata = meta
        stored = Preprocessing.from_dict(meta[PREPROCESSING_KEY], source=self.input_dir)
        served = stored.modalities if modalities is None else check_modalities(modalities)
        if not set(served) <= set(stored.modalities):
            raise InputError(
                f"modalities={list(served)} asks for more than the stream {self.input_dir} holds "
                f"({list(stored.modalities)}); serve a subset or write a new stream."
            )
        self.preprocessing = (
            stored.complete() if served == stored.modalities else _serve(stored, served)
        )
        self.loader = loader
        self.augmentation = augmentation
        self.chunk_cache_dir = chunk_cache_dir
        self.model_compiles = model_compiles
        self.shuffle_seed = loader.seed()
        self.counts: dict[str, int] = {k: int(v) for k, v in meta["counts"].items()}

    # ------------------------------------------------------------------ what the stream knows
    @property
    def train_labels(self) -> torch.Tensor:
        """Training labels ``[N, num_labels]`` stored with the stream (for ``pos_weight: auto``).

        Raises:
            InputError: When the stream's training split has unlabelled samples.
        """
        rows = self.stream_metadata.get("train_labels")
        if rows is None:
            rows = [None]
        return train_label_tensor(
            [None if row is None else tuple(row) for row in rows],
            self.num_labels,
            self.source_description(),
        )

    def source_description(self) -> str:
        """Describe the stream (and the data it was written from) for messages."""
        return f"stream {self.input_dir} (from {self.stream_metadata.get('source', '?')})"

    def setup(self, stage: str | None = None) -> None:
        """Nothing to prepare: the stream is already curated, split and tokenized.

        Args:
            stage: Lightning stage (unused).
        """

    # ------------------------------------------------------------------ loaders
    def _stream_loader(self, split: str) -> DataLoader[Any]:
        """Build the ``StreamingDataLoader`` of ``split`` (an empty loader for an empty split)."""
        from medllama_fusion.data.streaming import StreamItemReader, open_stream

        train = split == "train"
        options = self.loader.options(self.collator())
        if self.counts.get(split, 0) == 0:
            rank_zero_warn(f"the {split} split of {self.source_description()} is empty.")
            return DataLoader(
                _Empty(), batch_size=options["batch_size"], collate_fn=self.collator()
            )
        import litdata

        size = self.preprocessing.image_size
        reader = StreamItemReader(
            self.preprocessing.modalities,
            self.preprocessing.image_transform(train, self.augmentation),
            (size, size),
            seed=self.shuffle_seed if train and self.augmentation.enabled else None,
        )
        dataset = open_stream(
            self.input_dir,
            split,
            reader,
            shuffle=train,
            seed=self.shuffle_seed,
            drop_last=(True if self.loader.drop_last else None) if train else False,
            cache_dir=self.chunk_cache_dir,
        )
        loader: DataLoader[Any] = litdata.StreamingDataLoader(dataset, **options)
        return loader

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training batches, resumable mid-epoch (augmented at read time)."""
        loader = self._stream_loader("train")
        if hasattr(loader, "load_state_dict"):
            self._train_state.attach(loader)
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

    # ------------------------------------------------------------------ resume state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's position (now, or when the loader is built).

        Args:
            state_dict: A dict from :meth:`state_dict`.

        Raises:
            InputError: For the state of another data module's loader.
        """
        if state_dict and not self._train_state.load_state_dict(state_dict):
            raise InputError(
                f"the checkpoint's data state (keys {sorted(state_dict)}) was not written by "
                "StreamingDataModule; resume a streaming run from its own checkpoints, or start "
                "it with the checkpoint's weights only."
            )


def _serve(stored: Preprocessing, modalities: tuple[Modality, ...]) -> Preprocessing:
    """The stored record serving a subset of its modalities (derived fields kept)."""
    return dataclasses.replace(stored, modalities=modalities).complete(
        label_names=stored.label_names, pad_token_id=stored.pad_token_id
    )
