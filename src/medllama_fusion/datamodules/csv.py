"""``CSVDataModule``: any CSV of (image path, report text, label columns), e.g. MIMIC-CXR.

One CSV file lists all samples. Columns are named by arguments: ``image_column`` (path relative
to ``image_root``, default the CSV's folder; PNG 8/16-bit, JPEG or DICOM), ``text_column``,
``label_names`` (the label columns, any names; ``None`` = every other column), optional
``id_column``, ``split_column`` (values ``train``/``val``/``test``; ``validate``, ``validation``,
``dev``, ``training``, ``testing`` are accepted too) and ``group_column`` (e.g. ``subject_id``:
the seeded split keeps a patient's studies together). Without a split column the split is seeded
and multi-label stratified by group (``split_sizes``, ``split_seed``); with one, the same group
in two splits is an error. Columns that are not used are ignored (a pandas index column is named
in the setup summary). ``encoding`` (default UTF-8) reads e.g. Excel's ``cp1252`` exports; an
empty image cell or an empty report makes the row a one-modality sample (``missing_modality``).
CheXpert-style ``-1`` ("uncertain") cells are mapped to ``uncertain_label`` when given (U-Zeros:
0, U-Ones: 1), else reported as invalid labels.

Example (MIMIC-CXR-JPG export with a report column)::

    data:
      class_path: CSVDataModule
      init_args:
        csv_path: /data/mimic/mimic_reports.csv
        image_column: path
        text_column: report
        id_column: dicom_id
        group_column: subject_id
        split_column: split
        label_names: [Atelectasis, Cardiomegaly, Edema, Pleural Effusion]
        uncertain_label: 0
        tokenizer: /models/tokenizer
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medllama_fusion.datamodules.base import FusionDataModule, LoadedSamples
from medllama_fusion.datamodules.splits import PAPER_SPLIT_FRACTIONS, SPLIT_ALIASES, SPLIT_NAMES
from medllama_fusion.datasets.csv import is_index_column, read_csv_rows, read_samples_csv
from medllama_fusion.datasets.fusion_dataset import MODALITIES
from medllama_fusion.datasets.validation import UNKNOWN_SPLIT, DataProblem
from medllama_fusion.errors import InputError


def _csv_columns(path: Path, encoding: str) -> list[str]:
    """Return the header of a CSV file."""
    return read_csv_rows(path, encoding)[0]


class CSVDataModule(FusionDataModule):
    """Generic image-report-label CSV data module; see the module docstring.

    Args:
        csv_path: The CSV file.
        image_column: Column with image paths (relative to ``image_root``).
        text_column: Column with the report text.
        tokenizer: Tokenizer folder, ``.gguf`` file or hub id.
        label_names: Label columns in output order; ``None`` = all columns not used otherwise
            (read from the header at construction so ``label_names`` is known immediately).
        id_column: Unique id column; ``None`` = image path without suffix.
        split_column: Column with split names; ``None`` = seeded split.
        group_column: Column grouping rows for the seeded split (e.g. patient id).
        image_root: Folder image paths are relative to; default the CSV's folder.
        uncertain_label: Value for ``-1`` label cells; ``None`` reports them as invalid.
        max_length: Maximum report length in tokens.
        image_size: Image side length.
        batch_size: Batch size.
        num_workers: DataLoader workers.
        pin_memory: ``None`` = pin when CUDA is available.
        persistent_workers: ``None`` = keep workers when ``num_workers > 0``.
        prefetch_factor: Batches prefetched per worker.
        split_sizes: Train/val/test fractions or group counts for the seeded split.
        split_seed: Split seed.
        mask_label_words: Remove label words from reports.
        pad_to_max_length: Pad batches to ``max_length``.
        bad_input: ``"error"`` or ``"skip"``.
        verify_images: Check every image header at setup.
        augment: Training augmentation.
        horizontal_flip: Random horizontal flips (off by default).
        cache_dir: Tokenization cache folder (``None``: in memory).
        drop_last: Drop the last incomplete training batch.
        shuffle_seed: Training order/augmentation seed; ``None`` = the ``seed_everything`` seed.
        modalities: ``["text", "image"]`` (default), ``["text"]`` (no image files needed) or
            ``["image"]`` (no report text needed).
        missing_modality: ``"keep"`` (default) uses a sample lacking one modality with a
            per-sample mask; ``"drop"`` leaves it out.
        stratify: Seeded split: multi-label stratified by group (default).
        min_split_positives: Warn about classes with fewer positives in validation or test.
        encoding: Text encoding of the CSV (e.g. ``cp1252`` for Excel exports).

    Raises:
        DataFileNotFoundError: If ``csv_path`` does not exist.
    """

    def __init__(
        self,
        csv_path: str,
        image_column: str,
        text_column: str,
        tokenizer: str,
        label_names: list[str] | None = None,
        id_column: str | None = None,
        split_column: str | None = None,
        group_column: str | None = None,
        image_root: str | None = None,
        uncertain_label: float | None = None,
        max_length: int = 256,
        image_size: int = 224,
        batch_size: int = 20,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = 2,
        split_sizes: Sequence[float] | Sequence[int] = PAPER_SPLIT_FRACTIONS,
        split_seed: int = 0,
        mask_label_words: bool = False,
        pad_to_max_length: bool = False,
        bad_input: str = "error",
        verify_images: bool = True,
        augment: bool = True,
        horizontal_flip: bool = False,
        cache_dir: str | None = None,
        drop_last: bool = False,
        shuffle_seed: int | None = None,
        modalities: list[str] | None = None,
        missing_modality: str = "keep",
        stratify: bool = True,
        min_split_positives: int = 5,
        encoding: str = "utf-8",
    ) -> None:
        self.csv_path = Path(csv_path).expanduser()
        self.encoding = encoding
        self.structural_columns = [
            c for c in (image_column, text_column, id_column, split_column, group_column) if c
        ]
        if label_names is None:
            label_names = [
                c
                for c in _csv_columns(self.csv_path, encoding)
                if c not in self.structural_columns and not is_index_column(c)
            ]
        super().__init__(
            tokenizer=tokenizer,
            label_names=label_names,
            max_length=max_length,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            pad_to_max_length=pad_to_max_length,
            mask_label_words=mask_label_words,
            bad_input=bad_input,
            split_sizes=split_sizes,
            split_seed=split_seed,
            verify_images=verify_images,
            augment=augment,
            horizontal_flip=horizontal_flip,
            cache_dir=cache_dir,
            drop_last=drop_last,
            shuffle_seed=shuffle_seed,
            modalities=list(MODALITIES) if modalities is None else modalities,
            missing_modality=missing_modality,
            stratify=stratify,
            min_split_positives=min_split_positives,
        )
        self.image_column = image_column
        self.text_column = text_column
        self.id_column = id_column
        self.split_column = split_column
        self.group_column = group_column
        self.image_root = image_root
        self.uncertain_label = uncertain_label

    def source_description(self) -> str:
        """Name the CSV for messages."""
        return f"CSV data {self.csv_path}"

    def load_samples(self) -> LoadedSamples:
        """Read the CSV; use its split column when given.

        Returns:
            Samples, problems and the fixed split (when ``split_column`` is set).
        """
        result = read_samples_csv(
            self.csv_path,
            label_names=self.label_names,
            text_column=self.text_column,
            image_column=self.image_column,
            image_template=None,
            id_column=self.id_column,
            split_column=self.split_column,
            image_root=self.image_root,
            strict_columns=False,
            uncertain_label=self.uncertain_label,
            encoding=self.encoding,
        )
        samples = result.samples
        if self.group_column is not None:
            groups = self._groups()
            samples = [replace(s, group=groups.get(s.id, "")) for s in samples]
        loaded = LoadedSamples(
            samples=samples, problems=list(result.problems), notes=list(result.notes)
        )
        if self.split_column is not None:
            loaded.splits = {name: [] for name in SPLIT_NAMES}
            loaded.split_sources = {
                name: f"{self.csv_path} ({self.split_column}={name})" for name in SPLIT_NAMES
            }
            for sample in samples:
                value = result.splits.get(sample.id, "")
                name = SPLIT_ALIASES.get(value.lower())
                if name is None:
                    loaded.problems.append(
                        DataProblem(
                            UNKNOWN_SPLIT,
                            sample.id,
                            f"{self.split_column}={value!r}",
                            sample.id,
                        )
                    )
                else:
                    loaded.splits[name].append(sample.id)
        return loaded

    def _groups(self) -> dict[str, str]:
        """Map sample id → group value (same id rule as the CSV reader)."""
        assert self.group_column is not None
        fieldnames, rows = read_csv_rows(self.csv_path, self.encoding)
        if self.group_column not in fieldnames:
            raise InputError(
                f"group_column={self.group_column!r} is not a column of {self.csv_path}; "
                f"columns are {fieldnames}."
            )
        groups: dict[str, str] = {}
        for row in rows:
            if self.id_column is not None:
                key = (row.get(self.id_column) or "").strip()
            else:
                key = str(Path(row.get(self.image_column) or "").with_suffix(""))
            groups[key] = (row.get(self.group_column) or "").strip()
        return groups


__all__ = ["CSVDataModule"]
