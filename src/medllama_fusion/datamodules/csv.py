"""``CSVDataModule``: any CSV of (image path, report text, label columns), e.g. MIMIC-CXR.

The source is a :class:`~medllama_fusion.datasets.csv.CSVDataset` (columns named by arguments,
see :mod:`medllama_fusion.datasets.csv`). Without a ``split_column`` the split is seeded and
multi-label stratified by group (``group_column``, ``split_sizes``, ``split_seed``); with one,
the same group in two splits is an error. An empty image cell or an empty report makes the row a
one-modality sample (``missing_modality``).

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

from typing import Any

from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datasets.csv import CSVDataset


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
        encoding: Text encoding of the CSV (e.g. ``cp1252`` for Excel exports).
        **kwargs: The shared data arguments of
            :class:`~medllama_fusion.datamodules.base.FusionDataModule` (``batch_size``,
            ``image_size``, ``max_length``, ``split_sizes``, ``modalities``, ``bad_input``, ...).

    Raises:
        DataFileNotFoundError: If ``label_names`` is ``None`` and ``csv_path`` does not exist.
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
        encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        source = CSVDataset(
            csv_path,
            image_column=image_column,
            text_column=text_column,
            label_names=label_names,
            id_column=id_column,
            split_column=split_column,
            group_column=group_column,
            image_root=image_root,
            uncertain_label=uncertain_label,
            encoding=encoding,
        )
        super().__init__(
            tokenizer=tokenizer, label_names=source.label_names, source=source, **kwargs
        )
        self.csv_dataset = source
        self.csv_path = source.csv_path


__all__ = ["CSVDataModule"]
