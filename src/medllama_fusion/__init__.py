"""medllama-fusion: LLaMA-backbone multimodal disease classification (arXiv 2412.01306).

Chest X-rays + clinical reports, a LLaMA backbone fine-tuned with LoRA, and three fusion
strategies (parallel/early, serial/late, mixed) for 14-label classification on OpenI.

Example:
    >>> from medllama_fusion import BackboneConfig, ParallelFusion, VisionConfig
    >>> fusion = ParallelFusion(
    ...     backbone=BackboneConfig(config={"hidden_size": 64, "intermediate_size": 128,
    ...         "num_attention_heads": 4, "num_hidden_layers": 9, "vocab_size": 512}),
    ...     vision=VisionConfig(image_size=32, patch_size=8),
    ... )
"""

from medllama_fusion.callbacks import EpochSeed, PredictionCSVWriter
from medllama_fusion.configs import list_presets, preset_path
from medllama_fusion.datamodules import CSVDataModule, FusionDataModule, OpenIDataModule
from medllama_fusion.datasets import (
    OPENI_LABELS,
    DataProblemError,
    download_openi,
    labels_from_mesh,
    load_openi_reports,
    load_tokenizer,
    make_demo_dataset,
    mask_label_words,
)
from medllama_fusion.metrics import DefinedMultilabelAUROC, auroc_report, bootstrap_auroc
from medllama_fusion.models import (
    BackboneConfig,
    ClassificationHead,
    CrossAttentionBlock,
    CrossAttentionLayer,
    FusionContext,
    FusionModel,
    FusionOutput,
    LlamaBackbone,
    LlamaBlockStack,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
    VisionConfig,
    VisionEncoder,
)
from medllama_fusion.trainers import FusionClassifier
from medllama_fusion.tuners.lora import LoraSettings

__version__ = "0.1.0"

__all__ = [
    "OPENI_LABELS",
    "BackboneConfig",
    "CSVDataModule",
    "ClassificationHead",
    "CrossAttentionBlock",
    "CrossAttentionLayer",
    "DataProblemError",
    "DefinedMultilabelAUROC",
    "EpochSeed",
    "FusionClassifier",
    "FusionContext",
    "FusionDataModule",
    "FusionModel",
    "FusionOutput",
    "LlamaBackbone",
    "LlamaBlockStack",
    "LoraSettings",
    "MixedFusion",
    "OpenIDataModule",
    "ParallelFusion",
    "PredictionCSVWriter",
    "SerialFusion",
    "VisionConfig",
    "VisionEncoder",
    "__version__",
    "auroc_report",
    "bootstrap_auroc",
    "download_openi",
    "labels_from_mesh",
    "list_presets",
    "load_openi_reports",
    "load_tokenizer",
    "make_demo_dataset",
    "mask_label_words",
    "preset_path",
]
