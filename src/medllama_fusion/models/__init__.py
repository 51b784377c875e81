"""Model components: LLaMA backbone, vision encoder, cross-attention layers, fusion models."""

from medllama_fusion.models.backbone import BackboneConfig, LlamaBackbone
from medllama_fusion.models.fusion import (
    FusionContext,
    FusionModel,
    FusionOutput,
    HeadPooling,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
)
from medllama_fusion.models.heads import ClassificationHead, LabelAttentionHead
from medllama_fusion.models.layers import CrossAttentionBlock, CrossAttentionLayer, LlamaBlockStack
from medllama_fusion.models.parameter_report import format_parameter_report
from medllama_fusion.models.vision import VisionConfig, VisionEncoder

__all__ = [
    "BackboneConfig",
    "ClassificationHead",
    "CrossAttentionBlock",
    "CrossAttentionLayer",
    "FusionContext",
    "FusionModel",
    "FusionOutput",
    "HeadPooling",
    "LabelAttentionHead",
    "LlamaBackbone",
    "LlamaBlockStack",
    "MixedFusion",
    "ParallelFusion",
    "SerialFusion",
    "VisionConfig",
    "VisionEncoder",
    "format_parameter_report",
]
