"""Base class of the dataset classes that own a data source (files → samples).

A source dataset (:class:`~medllama_fusion.datasets.openi.OpenIDataset`,
:class:`~medllama_fusion.datasets.csv.CSVDataset`) knows where its files are, parses them and
returns every sample it found together with the problems it met and, when the files define one,
the fixed split (:meth:`SampleDataset.load`). It also indexes like a sequence of
:class:`~medllama_fusion.data.dataset.FusionSample` (loaded on first access).
A data module (:mod:`medllama_fusion.datamodules`) chooses a source dataset, applies the
bad-input policy, splits, tokenizes and batches; per-item image loading happens in
:class:`~medllama_fusion.data.dataset.FusionDataset`.

Examples:
    >>> from medllama_fusion.datasets import OpenIDataset
    >>> dataset = OpenIDataset("data/openi")  # doctest: +SKIP
    >>> loaded = dataset.load()  # doctest: +SKIP
    >>> len(loaded.samples), sorted(loaded.splits or {})  # doctest: +SKIP
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from medllama_fusion.datasets.problems import DataProblem
from medllama_fusion.errors import InputError

Modality = Literal["text", "image"]
"""A modality a sample can have and a batch can carry."""
MODALITIES: tuple[Modality, ...] = get_args(Modality)
"""The modalities, in canonical order (text first)."""


def check_modalities(modalities: Sequence[str]) -> tuple[Modality, ...]:
    """Validate a ``modalities`` list and return it in canonical order.

    Args:
        modalities: A non-empty subset of ``["text", "image"]``.

    Returns:
        The modalities as a tuple, ``text`` first.

    Raises:
        InputError: For an empty list or an unknown name.
    """
    if isinstance(modalities, str):
        modalities = [modalities]
    unknown = [name for name in modalities if name not in MODALITIES]
    if unknown or not modalities:
        raise InputError(
            f"modalities must be a non-empty subset of {list(MODALITIES)}; got {list(modalities)}. "
            "Use e.g. `modalities: [text]` for a text-only run."
        )
    return tuple(name for name in MODALITIES if name in modalities)


@dataclass(frozen=True)
class FusionSample:
    """One image-report sample (either modality may be missing).

    Attributes:
        id: Unique sample id (image id for OpenI; row id for CSVs).
        image_path: Path of the image file; ``None`` when the sample has no image.
        text: Report text, already formatted (e.g. ``FINDINGS : ... IMPRESSION : ...``); empty
            when the sample has no report.
        labels: Label vector in {0, 1}, ordered like the data module's ``label_names``;
            ``None`` for unlabelled (predict-only) data.
        group: Grouping key (the report id) so that the images of one report never land in
            different splits and are resampled together. Defaults to ``id`` when empty.
    """

    id: str
    image_path: Path | None
    text: str
    labels: tuple[float, ...] | None = None
    group: str = ""

    @property
    def group_key(self) -> str:
        """Return the grouping key (``group`` or, if empty, ``id``)."""
        return self.group or self.id

    @property
    def has_text(self) -> bool:
        """Whether the sample has non-blank report text."""
        return bool(self.text.strip())


SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
"""Split names, in order (keys of :attr:`LoadedSamples.splits`)."""

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
"""Spellings accepted in split columns (MIMIC-CXR uses ``validate``) → canonical split name."""


@dataclass
class LoadedSamples:
    """What a source dataset found on disk (:meth:`SampleDataset.load`).

    Attributes:
        samples: All samples found (the bad-input policy is not applied yet).
        problems: Problems found while loading (parse errors, bad label cells, ...).
        splits: Fixed split (split name → sample ids) when the data defines one, else ``None``.
        notes: Things reported (in the setup summary and the data module's ``problems``) that
            never raise, e.g. an ignored pandas index column.
        split_sources: Split name → the file it came from (named in leak messages).
        image_absent: Sample id → why the sample has no image path (e.g. ``no_frontal_image``).
    """

    samples: list[FusionSample]
    problems: list[DataProblem] = field(default_factory=list)
    splits: dict[str, list[str]] | None = None
    notes: list[DataProblem] = field(default_factory=list)
    split_sources: dict[str, str] = field(default_factory=dict)
    image_absent: dict[str, str] = field(default_factory=dict)


class SampleDataset(abc.ABC, Sequence[FusionSample]):
    """A data source on disk: finds its files and parses them into samples.

    Subclasses implement :meth:`load` and :meth:`describe`, and may override :meth:`prepare`
    (fetch or write the files) and :meth:`default_tokenizer`. Constructing one touches no file
    (except where a subclass needs a header to know its label names), so a data module can
    build it before :meth:`prepare` has fetched the data. A data module chooses a source by
    ``class_path`` (``data.init_args.source``).

    Args:
        label_names: Label names in output order.
    """

    def __init__(self, label_names: Sequence[str]) -> None:
        self.label_names: list[str] = list(label_names)
        self._loaded: LoadedSamples | None = None

    def prepare(self) -> None:
        """Fetch or write the files when asked to (the data module calls it once, on rank 0).

        The default does nothing: the files are expected to be there.
        """

    def default_tokenizer(self) -> str | None:
        """A tokenizer that comes with the data (e.g. the demo's), or ``None`` (the default)."""
        return None

    @abc.abstractmethod
    def load(self, modalities: Sequence[str] = MODALITIES) -> LoadedSamples:
        """Read the source: every sample, the problems found and the fixed split (if any).

        Args:
            modalities: The modalities that will be used; a source may skip work (and warnings)
                that only a missing one needs.

        Returns:
            A fresh :class:`LoadedSamples` (files are read again on every call).
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """Name the source (folder, file, layout) for messages."""

    @property
    def loaded(self) -> LoadedSamples:
        """The result of :meth:`load`, read on first access and kept."""
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded

    def __len__(self) -> int:
        """Number of samples found (problems not applied)."""
        return len(self.loaded.samples)

    def __getitem__(self, index: int) -> FusionSample:  # type: ignore[override]
        """Return sample ``index`` (unsplit, untokenized; images are read by the data module).

        Args:
            index: Sample position.

        Returns:
            The sample.
        """
        return self.loaded.samples[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


__all__ = [
    "MODALITIES",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "FusionSample",
    "LoadedSamples",
    "Modality",
    "SampleDataset",
    "check_modalities",
]
