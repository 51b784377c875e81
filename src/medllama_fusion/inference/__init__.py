"""Inference on a trained model: the pipeline, the exported folder and explanations."""

from medllama_fusion.inference.pipeline import FusionPipeline

__all__ = ["FusionPipeline"]
