"""Lightning data modules: choose a source dataset, split it and batch it.

:class:`OpenIDataModule` (OpenI, raw NLM release or MONAI CSVs, via
:class:`~medllama_fusion.datasets.openi.OpenIDataset`) and :class:`CSVDataModule` (generic CSV
data, via :class:`~medllama_fusion.datasets.csv.CSVDataset`) share the arguments and the
machinery of :class:`FusionDataModule`. :class:`StreamingDataModule` serves a stream written once
by ``medllama-fusion optimize`` (LitData's sharded format, read across nodes; optional extra
``streaming``).
"""

from medllama_fusion.data.loaders import (
    ResumableDataLoader,
    ResumableSampler,
    SeededDataset,
    sample_seed,
)
from medllama_fusion.data.splits import (
    PAPER_SPLIT_FRACTIONS,
    SPLIT_ALIASES,
    SPLIT_NAMES,
    positive_counts,
    positives_table,
    split_counts,
    split_samples,
    stratified_split_samples,
)
from medllama_fusion.datamodules.base import FATAL_KINDS, FusionDataModule, LoadedSamples
from medllama_fusion.datamodules.csv import CSVDataModule
from medllama_fusion.datamodules.openi import (
    DEMO_SEED,
    LAYOUTS,
    OpenIDataModule,
    detect_layout,
    find_view_metadata,
    write_demo_root,
)
from medllama_fusion.datamodules.streaming import StreamingDataModule

__all__ = [
    "DEMO_SEED",
    "FATAL_KINDS",
    "LAYOUTS",
    "PAPER_SPLIT_FRACTIONS",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "CSVDataModule",
    "FusionDataModule",
    "LoadedSamples",
    "OpenIDataModule",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "StreamingDataModule",
    "detect_layout",
    "find_view_metadata",
    "positive_counts",
    "positives_table",
    "sample_seed",
    "split_counts",
    "split_samples",
    "stratified_split_samples",
    "write_demo_root",
]
