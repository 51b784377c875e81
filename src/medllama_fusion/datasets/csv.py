"""``CSVDataset``: any CSV of (image path, report text, label columns), e.g. MIMIC-CXR.

One CSV file lists all samples. Columns are named by arguments: ``image_column`` (path relative
to ``image_root``, default the CSV's folder; PNG 8/16-bit, JPEG or DICOM), ``text_column``,
``label_names`` (the label columns, any names; ``None`` = every other column), optional
``id_column``, ``split_column`` (values ``train``/``val``/``test``; ``validate``, ``validation``,
``dev``, ``training``, ``testing`` are accepted too) and ``group_column`` (e.g. ``subject_id``:
a seeded split keeps a patient's studies together). Columns that are not used are ignored (a
pandas index column is named in the notes). ``encoding`` (default UTF-8) reads e.g. Excel's
``cp1252`` exports; an empty image cell or an empty report makes the row a one-modality sample.
CheXpert-style ``-1`` ("uncertain") cells are mapped to ``uncertain_label`` when given (U-Zeros:
0, U-Ones: 1), else reported as invalid labels. Rows are parsed by
:func:`~medllama_fusion.datasets.csv_reader.read_samples_csv`.

Examples:
    >>> from medllama_fusion.datasets import CSVDataset
    >>> dataset = CSVDataset("mimic.csv", image_column="path", text_column="report",
    ...                      split_column="split")  # doctest: +SKIP
    >>> sorted(dataset.load().splits)  # doctest: +SKIP
    ['test', 'train', 'val']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medllama_fusion.datasets.base import (
    MODALITIES,
    SPLIT_ALIASES,
    SPLIT_NAMES,
    LoadedSamples,
    SampleDataset,
)
from medllama_fusion.datasets.csv_reader import is_index_column, read_csv_rows, read_samples_csv
from medllama_fusion.datasets.problems import UNKNOWN_SPLIT, DataProblem
from medllama_fusion.errors import InputError


class CSVDataset(SampleDataset):
    """An image-report-label CSV file; see the module docstring.

    Args:
        csv_path: The CSV file.
        image_column: Column with image paths (relative to ``image_root``).
        text_column: Column with the report text.
        label_names: Label columns in output order; ``None`` = all columns not used otherwise
            (read from the header at construction so ``label_names`` is known immediately).
        id_column: Unique id column; ``None`` = image path without suffix.
        split_column: Column with split names; ``None`` = no fixed split.
        group_column: Column grouping rows for a seeded split (e.g. patient id).
        image_root: Folder image paths are relative to; default the CSV's folder.
        uncertain_label: Value for ``-1`` label cells; ``None`` reports them as invalid.
        encoding: Text encoding of the CSV (e.g. ``cp1252`` for Excel exports).

    Raises:
        DataFileNotFoundError: If ``label_names`` is ``None`` and ``csv_path`` does not exist.
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_column: str,
        text_column: str,
        label_names: Sequence[str] | None = None,
        id_column: str | None = None,
        split_column: str | None = None,
        group_column: str | None = None,
        image_root: str | Path | None = None,
        uncertain_label: float | None = None,
        encoding: str = "utf-8",
    ) -> None:
        self.csv_path = Path(csv_path).expanduser()
        self.encoding = encoding
        self.structural_columns = [
            c for c in (image_column, text_column, id_column, split_column, group_column) if c
        ]
        if label_names is None:
            header = read_csv_rows(self.csv_path, encoding)[0]
            label_names = [
                c for c in header if c not in self.structural_columns and not is_index_column(c)
            ]
        super().__init__(label_names)
        self.image_column = image_column
        self.text_column = text_column
        self.id_column = id_column
        self.split_column = split_column
        self.group_column = group_column
        self.image_root = image_root
        self.uncertain_label = uncertain_label

    def describe(self) -> str:
        """Name the CSV for messages."""
        return f"CSV data {self.csv_path}"

    def load(self, modalities: Sequence[str] = MODALITIES) -> LoadedSamples:
        """Read the CSV; its split column (when given) is the fixed split.

        Args:
            modalities: Unused (every column is read).

        Returns:
            Samples, problems and the fixed split (when ``split_column`` is set).

        Raises:
            DataFileNotFoundError: If ``csv_path`` does not exist.
            CSVEncodingError: If the file is not in ``encoding``.
            InputError: If a named column is not in the file.
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
                            UNKNOWN_SPLIT, sample.id, f"{self.split_column}={value!r}", sample.id
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


__all__ = ["CSVDataset"]
