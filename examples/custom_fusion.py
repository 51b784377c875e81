"""A custom fusion variant written as one subclass of :class:`FusionModel`.

``GatedFusion`` runs early cross layers on the embedding-level features and late cross layers on
the stacks' outputs (like ``MixedFusion``), but mixes the two with a learned per-channel sigmoid
gate instead of chaining them. Put this file's folder on ``PYTHONPATH`` and select it in YAML with
``class_path: custom_fusion.GatedFusion``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from medllama_fusion.models import FusionContext, FusionModel

__all__ = ["GatedFusion"]


class GatedFusion(FusionModel):
    """Early and late cross layers mixed by a learned sigmoid gate per modality.

    ``out = g * early + (1 - g) * late`` with ``g = sigmoid(gate)``, where ``early`` is
    ``stack(x) + early_cross(x)`` and ``late`` is ``late_cross(stack(x))``.

    Args:
        *args: Passed to :class:`FusionModel`.
        **kwargs: Passed to :class:`FusionModel`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hidden = self.backbone.hidden_size
        # Trainable tensors stay float32 above a bf16/fp16 base (optimizer updates must not round).
        self.text_gate = nn.Parameter(torch.zeros(hidden, dtype=torch.float32))
        self.image_gate = nn.Parameter(torch.zeros(hidden, dtype=torch.float32))

    def fuse(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Gate between early (parallel) and late (serial) cross-layer outputs."""
        text_out = self.encode_text(text, ctx)
        image_out = self.encode_image(image, ctx)
        if text is None or image is None or text_out is None or image_out is None:
            return text_out, image_out
        early_text, early_image = self.cross(self.early_cross, text, image, ctx)
        late_text, late_image = self.cross(self.late_cross, text_out, image_out, ctx)
        assert early_text is not None and early_image is not None
        assert late_text is not None and late_image is not None
        g_text = torch.sigmoid(self.text_gate).to(text_out.dtype)
        g_image = torch.sigmoid(self.image_gate).to(image_out.dtype)
        fused_text = g_text * (text_out + early_text) + (1 - g_text) * late_text
        fused_image = g_image * (image_out + early_image) + (1 - g_image) * late_image
        return fused_text, fused_image
