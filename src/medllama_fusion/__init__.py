"""medllama-fusion: LLaMA-backbone multimodal disease classification (arXiv 2412.01306).

Chest X-rays + clinical reports, a LLaMA backbone fine-tuned with LoRA, and three fusion
strategies (parallel/early, serial/late, mixed) for 14-label classification on OpenI.

Examples:
    >>> from medllama_fusion import BackboneConfig, ParallelFusion, VisionConfig
    >>> fusion = ParallelFusion(
    ...     backbone=BackboneConfig(config={"hidden_size": 64, "intermediate_size": 128,
    ...         "num_attention_heads": 4, "num_hidden_layers": 9, "vocab_size": 512}),
    ...     vision=VisionConfig(image_size=32, patch_size=8),
    ... )
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medllama_fusion._quiet import install_filters

install_filters()

# Public names and the module that defines each. They are imported on first access (module-level
# ``__getattr__``) so that ``import medllama_fusion``, the command-line help and the preset listing
# do not pay for torch, transformers and peft until a class is actually used.
_EXPORTS: dict[str, str] = {
    "EpochSeed": "medllama_fusion.trainers",
    "PredictionCSVWriter": "medllama_fusion.trainers",
    "list_presets": "medllama_fusion.configs",
    "preset_path": "medllama_fusion.configs",
    "CSVDataModule": "medllama_fusion.datamodules",
    "FusionDataModule": "medllama_fusion.datamodules",
    "OpenIDataModule": "medllama_fusion.datamodules",
    "CSVDataset": "medllama_fusion.datasets",
    "DataProblemError": "medllama_fusion.datasets",
    "OpenIDataset": "medllama_fusion.datasets",
    "InputError": "medllama_fusion.errors",
    "OperatingPoints": "medllama_fusion.trainers",
    "FusionPipeline": "medllama_fusion.inference",
    "OPENI_LABELS": "medllama_fusion.datasets",
    "download_openi": "medllama_fusion.datasets",
    "labels_from_mesh": "medllama_fusion.datasets",
    "load_openi_reports": "medllama_fusion.datasets",
    "load_tokenizer": "medllama_fusion.data",
    "make_demo_dataset": "medllama_fusion.demo",
    "mask_label_words": "medllama_fusion.data",
    "DefinedMultilabelAUROC": "medllama_fusion.metrics",
    "auroc_report": "medllama_fusion.metrics",
    "bootstrap_auroc": "medllama_fusion.metrics",
    "BackboneConfig": "medllama_fusion.models",
    "ClassificationHead": "medllama_fusion.models",
    "CrossAttentionBlock": "medllama_fusion.models",
    "CrossAttentionLayer": "medllama_fusion.models",
    "FusionContext": "medllama_fusion.models",
    "FusionModel": "medllama_fusion.models",
    "FusionOutput": "medllama_fusion.models",
    "LlamaBackbone": "medllama_fusion.models",
    "LlamaBlockStack": "medllama_fusion.models",
    "MixedFusion": "medllama_fusion.models",
    "ParallelFusion": "medllama_fusion.models",
    "SerialFusion": "medllama_fusion.models",
    "VisionConfig": "medllama_fusion.models",
    "VisionEncoder": "medllama_fusion.models",
    "format_parameter_report": "medllama_fusion.models",
    "FusionClassifier": "medllama_fusion.trainers",
    "LoraSettings": "medllama_fusion.tuners.lora",
}

_SUBMODULES = frozenset(
    {
        "cli",
        "configs",
        "data",
        "datamodules",
        "datasets",
        "demo",
        "errors",
        "extras",
        "inference",
        "metrics",
        "models",
        "trainers",
        "tuners",
    }
)

if TYPE_CHECKING:
    __version__: str
    from medllama_fusion.configs import list_presets, preset_path
    from medllama_fusion.data import load_tokenizer, mask_label_words
    from medllama_fusion.datamodules import CSVDataModule, FusionDataModule, OpenIDataModule
    from medllama_fusion.datasets import (
        OPENI_LABELS,
        CSVDataset,
        DataProblemError,
        OpenIDataset,
        download_openi,
        labels_from_mesh,
        load_openi_reports,
    )
    from medllama_fusion.demo import make_demo_dataset
    from medllama_fusion.errors import InputError
    from medllama_fusion.inference import FusionPipeline
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
        format_parameter_report,
    )
    from medllama_fusion.trainers import (
        EpochSeed,
        FusionClassifier,
        OperatingPoints,
        PredictionCSVWriter,
    )
    from medllama_fusion.tuners.lora import LoraSettings

__all__ = [
    "OPENI_LABELS",
    "BackboneConfig",
    "CSVDataModule",
    "CSVDataset",
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
    "FusionPipeline",
    "InputError",
    "LlamaBackbone",
    "LlamaBlockStack",
    "LoraSettings",
    "MixedFusion",
    "OpenIDataModule",
    "OpenIDataset",
    "OperatingPoints",
    "ParallelFusion",
    "PredictionCSVWriter",
    "SerialFusion",
    "VisionConfig",
    "VisionEncoder",
    "__version__",
    "auroc_report",
    "bootstrap_auroc",
    "download_openi",
    "format_parameter_report",
    "labels_from_mesh",
    "list_presets",
    "load_openi_reports",
    "load_tokenizer",
    "make_demo_dataset",
    "mask_label_words",
    "preset_path",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a subpackage) on first access and cache it in the module."""
    value: Any
    if name == "__version__":
        from medllama_fusion._version import version

        value = version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names, also those not imported yet."""
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES | {"__version__"})
