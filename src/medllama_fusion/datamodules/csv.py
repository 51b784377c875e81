"""``CSVDataModule``: a :class:`~medllama_fusion.datamodules.FusionDataModule` over a CSV file.

The source is a :class:`~medllama_fusion.datasets.CSVDataset` (image path, report text and label
columns named by its arguments), e.g. a MIMIC-CXR export::

    data:
      class_path: CSVDataModule
      init_args:
        source:
          class_path: CSVDataset
          init_args:
            csv_path: /data/mimic/mimic_reports.csv
            image_column: path
            text_column: report
            id_column: dicom_id
            group_column: subject_id
            split_column: split
            label_names: [Atelectasis, Cardiomegaly, Edema, Pleural Effusion]
            uncertain_label: 0
        preprocessing:
          tokenizer: /models/tokenizer

Without a ``split_column`` the split is seeded and multi-label stratified by group; with one,
the same group in two splits is an error. An empty image cell or an empty report makes the row a
one-modality sample (``curation.missing_modality``).
"""

from __future__ import annotations

from typing import Any

from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datasets.csv import CSVDataset

__all__ = ["CSVDataModule"]


class CSVDataModule(FusionDataModule):
    """Generic image-report-label CSV batches; see the module docstring.

    Args:
        source: The CSV source (``class_path: CSVDataset``).
        **kwargs: The other arguments of
            :class:`~medllama_fusion.datamodules.FusionDataModule` (``preprocessing``,
            ``loader``, ``curation``, ``split``, ...).
    """

    def __init__(self, source: CSVDataset, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
