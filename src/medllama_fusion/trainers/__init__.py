"""Lightning training modules."""

from .classification import FusionClassifier
from .schedules import warmup_cosine_schedule

__all__ = ["FusionClassifier", "warmup_cosine_schedule"]
