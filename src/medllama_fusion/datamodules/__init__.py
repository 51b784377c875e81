"""Lightning data modules: choose a source dataset, split it and batch it.

:class:`FusionDataModule` takes any source dataset by ``class_path``
(:class:`~medllama_fusion.datasets.OpenIDataset`, :class:`~medllama_fusion.datasets.CSVDataset`,
:class:`~medllama_fusion.demo.DemoDataset` or your own
:class:`~medllama_fusion.datasets.SampleDataset`); :class:`OpenIDataModule` and
:class:`CSVDataModule` are the same with the source's type fixed. :class:`StreamingDataModule`
serves a stream written once by ``medllama-fusion optimize`` (LitData's sharded format, read
across nodes; optional extra ``streaming``).
"""

from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datamodules.csv import CSVDataModule
from medllama_fusion.datamodules.openi import OpenIDataModule
from medllama_fusion.datamodules.streaming import StreamingDataModule

__all__ = ["CSVDataModule", "FusionDataModule", "OpenIDataModule", "StreamingDataModule"]
