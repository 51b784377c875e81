"""``OpenIDataModule``: a :class:`~medllama_fusion.datamodules.FusionDataModule` over OpenI.

The source is an :class:`~medllama_fusion.datasets.OpenIDataset` (the raw NLM release or the
MONAI TransCheX CSVs) or the :class:`~medllama_fusion.demo.DemoDataset`; every other argument is
the :class:`~medllama_fusion.datamodules.FusionDataModule`'s. The MONAI CSV layout keeps its
fixed split (the same id or report in two files is an error naming both); the raw release is
split seeded and multi-label stratified by report, so all images of a report stay in one split.
"""

from __future__ import annotations

from typing import Any

from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datasets.openi import OpenIDataset

__all__ = ["OpenIDataModule"]


class OpenIDataModule(FusionDataModule):
    """OpenI (Indiana University chest X-ray) batches; see the module docstring.

    Args:
        source: The OpenI source (``class_path: OpenIDataset`` or ``DemoDataset``).
        **kwargs: The other arguments of
            :class:`~medllama_fusion.datamodules.FusionDataModule` (``preprocessing``,
            ``loader``, ``curation``, ``split``, ...).
    """

    def __init__(self, source: OpenIDataset, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
