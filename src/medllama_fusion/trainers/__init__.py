"""Training: the LightningModule, its callbacks and the pieces of its training loop."""

from medllama_fusion.trainers.callbacks import EpochSeed, PredictionCSVWriter
from medllama_fusion.trainers.classification import FusionClassifier
from medllama_fusion.trainers.operating_points import OperatingPoints
from medllama_fusion.trainers.schedules import warmup_cosine_schedule

__all__ = [
    "EpochSeed",
    "FusionClassifier",
    "OperatingPoints",
    "PredictionCSVWriter",
    "warmup_cosine_schedule",
]
