"""From source samples to batches: curation, preprocessing, the torch Dataset, loaders, streams.

:mod:`~medllama_fusion.data.curation` applies the bad-input policy and the split checks,
:mod:`~medllama_fusion.data.text` masks label words and tokenizes,
:mod:`~medllama_fusion.data.images` decodes, resizes and transforms images,
:mod:`~medllama_fusion.data.dataset` holds the torch ``Dataset`` and the batch collator,
:mod:`~medllama_fusion.data.splits` the seeded splits, :mod:`~medllama_fusion.data.loaders` the
resumable loaders and :mod:`~medllama_fusion.data.streaming` the sharded stream format.
"""

from medllama_fusion.data.curation import CurationSettings, curate
from medllama_fusion.data.dataset import FusionCollator, FusionDataset
from medllama_fusion.data.loaders import LoaderSettings, ResumableDataLoader
from medllama_fusion.data.preprocessing import Augmentation, Preprocessing
from medllama_fusion.data.splits import SplitSettings, assign_splits
from medllama_fusion.data.text import load_tokenizer, mask_label_words

__all__ = [
    "Augmentation",
    "CurationSettings",
    "FusionCollator",
    "FusionDataset",
    "LoaderSettings",
    "Preprocessing",
    "ResumableDataLoader",
    "SplitSettings",
    "assign_splits",
    "curate",
    "load_tokenizer",
    "mask_label_words",
]
