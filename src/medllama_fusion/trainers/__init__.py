"""Lightning training modules."""

from .classification import FusionClassifier
from .schedules import WarmupCosine, warmup_cosine_schedule

__all__ = ["FusionClassifier", "WarmupCosine", "warmup_cosine_schedule"]
