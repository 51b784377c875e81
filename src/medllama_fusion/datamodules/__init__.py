"""Lightning data modules: OpenI (raw NLM release or MONAI CSVs) and generic CSV data."""

from medllama_fusion.datamodules.base import FATAL_KINDS, FusionDataModule, LoadedSamples
from medllama_fusion.datamodules.csv import CSVDataModule
from medllama_fusion.datamodules.openi import (
    LAYOUTS,
    OpenIDataModule,
    detect_layout,
    find_view_metadata,
)
from medllama_fusion.datamodules.splits import (
    PAPER_SPLIT_FRACTIONS,
    SPLIT_ALIASES,
    SPLIT_NAMES,
    split_counts,
    split_samples,
)

__all__ = [
    "FATAL_KINDS",
    "LAYOUTS",
    "PAPER_SPLIT_FRACTIONS",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "CSVDataModule",
    "FusionDataModule",
    "LoadedSamples",
    "OpenIDataModule",
    "detect_layout",
    "find_view_metadata",
    "split_counts",
    "split_samples",
]
