"""``FusionDataModule``: a source dataset → curated, split, tokenized batches.

Data flow::

    source (class_path: OpenIDataset, CSVDataset, DemoDataset, ...)
      │ prepare_data: source.prepare()           (download / write the demo, rank 0)
      │ setup:        source.load(modalities)    (samples + problems + fixed split)
      ▼
    curate            (checks, bad-input and missing-modality policies, one summary)
      ▼
    assign_splits     (the fixed split, else a seeded, stratified split by report group)
      ▼
    check_splits      (no empty split, positives per class and split)
      ▼
    preprocessing.encode once per split (cached), FusionDataset per split
      ▼
    loaders           (resumable, seeded training loader; evaluation loaders)

The data module chooses, splits and batches; each step lives in its own module:
:mod:`~medllama_fusion.data.curation`, :mod:`~medllama_fusion.data.splits`,
:mod:`~medllama_fusion.data.preprocessing` (the :class:`Preprocessing` record every checkpoint
carries) and :mod:`~medllama_fusion.data.loaders`. Batches have the format documented in
:mod:`medllama_fusion.data.dataset`.

The training loader is a :class:`~medllama_fusion.data.loaders.ResumableDataLoader`: its order
and augmentation are seeded by ``(shuffle_seed, epoch)``, and its position is saved in
checkpoints as this data module's state (:meth:`FusionDataModule.state_dict`), so a checkpoint
written mid-epoch resumes exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from medllama_fusion.data.curation import CurationSettings, check_splits, curate
from medllama_fusion.data.dataset import FusionCollator, FusionDataset
from medllama_fusion.data.image_cache import ImageCache
from medllama_fusion.data.loaders import LoaderSettings, ResumableDataLoader, TrainLoaderState
from medllama_fusion.data.preprocessing import Augmentation, Preprocessing
from medllama_fusion.data.splits import SPLIT_NAMES, SplitSettings, assign_splits
from medllama_fusion.datasets.base import FusionSample, SampleDataset
from medllama_fusion.datasets.problems import DataProblem
from medllama_fusion.errors import InputError

__all__ = ["BatchDataModule", "FusionDataModule", "train_label_tensor"]

logger = logging.getLogger(__name__)


def train_label_tensor(
    rows: list[tuple[float, ...] | None], num_labels: int, source: str
) -> torch.Tensor:
    """Training labels as ``FloatTensor [N, num_labels]`` (for ``pos_weight: auto``).

    Args:
        rows: One label vector per training sample (``None``: unlabelled).
        num_labels: Number of labels.
        source: The data, named in the error.

    Returns:
        The labels.

    Raises:
        InputError: If a training sample has no labels.
    """
    if any(row is None for row in rows):
        raise InputError(
            f"the training split of {source} has unlabelled samples; every training sample "
            "needs its label columns."
        )
    if not rows:
        return torch.zeros((0, num_labels), dtype=torch.float32)
    return torch.tensor(rows, dtype=torch.float32)


class BatchDataModule(pl.LightningDataModule):
    """What the library's data modules share: the record, the loaders' settings, resume state.

    Subclasses set :attr:`preprocessing` (a complete record), :attr:`loader` and
    :attr:`model_compiles` and build their loaders with :meth:`collator`.
    """

    preprocessing: Preprocessing
    loader: LoaderSettings
    model_compiles: bool

    def __init__(self, state_key: str) -> None:
        super().__init__()
        self._train_state = TrainLoaderState(state_key)

    @property
    def label_names(self) -> list[str]:
        """Label names in output order."""
        return list(self.preprocessing.label_names)

    @property
    def num_labels(self) -> int:
        """Number of labels."""
        return len(self.preprocessing.label_names)

    @property
    def modalities(self) -> tuple[str, ...]:
        """What batches carry (``preprocessing.modalities``)."""
        return self.preprocessing.modalities

    def padded_lengths(self) -> list[int] | None:
        """The fixed lengths text batches are padded to, or ``None`` (each batch's longest)."""
        return self.preprocessing.padded_lengths(self.model_compiles)

    def collator(self) -> FusionCollator:
        """The batch collator of every loader (:meth:`Preprocessing.collator`)."""
        return self.preprocessing.collator(self.model_compiles)

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the training loader's position (``{}`` before it exists)."""
        return self._train_state.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's position (now, or when the loader is built).

        Args:
            state_dict: A dict from :meth:`state_dict`.
        """
        self._train_state.load_state_dict(state_dict)


class FusionDataModule(BatchDataModule):
    """Image + report + labels batches from a source dataset (see the module docstring).

    Args:
        source: The source dataset (``class_path: OpenIDataset``, ``CSVDataset``,
            ``DemoDataset`` or your own :class:`~medllama_fusion.datasets.SampleDataset`).
        preprocessing: Tokenizer, lengths, image size and normalisation, label-word masking,
            modalities and padding (the record every checkpoint carries); the label names come
            from the source.
        loader: Batch size, workers and the shuffle seed of every loader.
        augmentation: Training-time image augmentation.
        curation: The checks and the bad-input, missing-modality and split-leak policies.
        split: The seeded split (data without a fixed split).
        cache_dir: Folder for the tokenization cache files; ``None`` keeps it in memory only.
        image_cache_dir: Keep every image, decoded and resized to ``image_size``, in this folder
            the first time it is read and read it from there afterwards (see
            :mod:`~medllama_fusion.data.image_cache`); augmentation still runs every epoch.
        model_compiles: Whether the model is compiled; with ``length_buckets: auto`` batches are
            then padded to a few fixed lengths. The command line sets it from
            ``model.init_args.compile``.
    """

    def __init__(
        self,
        source: SampleDataset,
        preprocessing: Preprocessing = Preprocessing(),
        loader: LoaderSettings = LoaderSettings(),
        augmentation: Augmentation = Augmentation(),
        curation: CurationSettings = CurationSettings(),
        split: SplitSettings = SplitSettings(),
        cache_dir: str | None = None,
        image_cache_dir: str | None = None,
        model_compiles: bool = False,
    ) -> None:
        super().__init__("train_loader")
        if not source.label_names:
            raise InputError(f"{source.describe()} names no label; give it label_names.")
        self.source = source
        self.preprocessing = preprocessing.complete(
            tokenizer=preprocessing.tokenizer or source.default_tokenizer(),
            label_names=source.label_names,
        )
        self.loader = loader
        self.augmentation = augmentation
        self.curation = curation
        self.split = split
        self.cache_dir = cache_dir
        self.image_cache_dir = image_cache_dir
        self.model_compiles = model_compiles
        self.shuffle_seed = loader.seed()
        self.summary: dict[str, list[DataProblem]] = {}
        self.problems: list[DataProblem] = []
        self.samples: dict[str, list[FusionSample]] = {}
        self.datasets: dict[str, FusionDataset] = {}

    # ------------------------------------------------------------------ what the data is
    @property
    def train_labels(self) -> torch.Tensor:
        """Labels of the training split, FloatTensor ``[N, num_labels]`` (runs :meth:`setup`).

        Used by ``FusionClassifier(pos_weight="auto")`` for ``negatives / positives`` per class.
        """
        if not self.datasets:
            self.setup("fit")
        rows = [sample.labels for sample in self.samples["train"]]
        return train_label_tensor(rows, self.num_labels, self.source_description())

    def source_description(self) -> str:
        """Describe the data source for messages."""
        return self.source.describe()

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Fetch or write the source's files (download, demo) once, on rank zero."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load, curate, split and tokenize the data once (later calls return immediately).

        Args:
            stage: Lightning stage (unused: all splits are prepared together so that the
                problem report and the split are complete and consistent).

        Raises:
            DataProblemError: Under ``bad_input="error"`` when any problem was found.
            SplitLeakError: If a sample id or report group is in two fixed splits.
            EmptySplitError: If a split ends up without samples.
            InputError: If a served modality is absent from every sample, or
                ``image_cache_dir`` cannot be created or written.
        """
        if self.datasets:
            return
        source = self.source_description()
        modalities = self.preprocessing.modalities
        loaded = self.source.load(modalities)
        curated = curate(loaded, modalities, self.curation, source)
        self.summary, self.problems = curated.summary, curated.problems
        self.samples = assign_splits(curated.samples, loaded.splits, self.split)
        origins = {
            name: loaded.split_sources.get(name, self.split.describe()) for name in SPLIT_NAMES
        }
        check_splits(self.samples, self.label_names, self.curation, source, origins)
        if "text" in modalities:
            tokenizer = self.preprocessing.loaded_tokenizer
            self.preprocessing = self.preprocessing.complete(pad_token_id=tokenizer.pad_token_id)
        cache = ImageCache(self.image_cache_dir) if self.image_cache_dir else None
        if cache is not None and "image" in modalities:
            cache.prepare()
        size = self.preprocessing.image_size
        for name in SPLIT_NAMES:
            split = self.samples[name]
            text = [sample.text for sample in split]
            self.datasets[name] = FusionDataset(
                split,
                self.preprocessing.encode(text, self.cache_dir) if "text" in modalities else [],
                self.preprocessing.image_transform(name == "train", self.augmentation),
                modalities=modalities,
                image_present=[curated.image_present.get(s.id, False) for s in split],
                text_present=[s.has_text for s in split],
                image_size=(size, size),
                image_cache=cache,
            )
        logger.info(
            "%s: %s samples (train/val/test), modalities %s, %d problem(s)",
            source,
            "/".join(str(len(self.samples[name])) for name in SPLIT_NAMES),
            list(modalities),
            len(self.problems),
        )

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: str) -> DataLoader[Any]:
        """Build the evaluation DataLoader of split ``name``."""
        if name not in self.datasets:
            self.setup()
        dataset = self.datasets[name]
        if len(dataset) == 0:
            rank_zero_warn(f"the {name} split of {self.source_description()} is empty.")
        return DataLoader(dataset, shuffle=False, **self.loader.options(self.collator()))

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, resumable training batches (augmented images).

        A :class:`~medllama_fusion.data.loaders.ResumableDataLoader` (torchdata's
        ``StatefulDataLoader``): order and augmentation seeded by ``(shuffle_seed, epoch,
        index)``, each DDP rank reading its own shard, and a position that a mid-epoch checkpoint
        restores exactly.
        """
        if "train" not in self.datasets:
            self.setup()
        dataset = self.datasets["train"]
        if len(dataset) == 0:
            rank_zero_warn(f"the train split of {self.source_description()} is empty.")
        loader = ResumableDataLoader(
            dataset,
            shuffle=True,
            seed=self.shuffle_seed,
            drop_last=self.loader.drop_last,
            **self.loader.options(self.collator()),
        )
        self._train_state.attach(loader)
        return loader

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[Any]:
        """Prediction batches (the test split)."""
        return self._loader("test")
