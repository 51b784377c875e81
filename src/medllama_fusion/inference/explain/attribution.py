"""Integrated Gradients (Captum) over token embeddings and patch tokens of a fusion model.

The attribution inputs are the outputs of :meth:`FusionModel.embed_text` (``[B, L, D]``) and
:meth:`FusionModel.embed_image` (``[B, P, D]``, patch projection + position embedding); the rest
of the model's own ``forward`` runs unchanged on them. Baselines: the pad token's embedding at
every position, and the patch tokens of an all-black image (so the position embeddings cancel
and attribution goes to image content). Scores per token / patch are sums over the hidden size;
by the completeness of Integrated Gradients all scores of a sample add up to
``logit(input) - logit(baseline)`` (up to the reported convergence delta). Needs the ``explain``
extra (Captum).

For a model with ``pooling="label_attention"``, :func:`label_attention` reads the head's own
per-label attention weights over the report tokens and the patches (one forward, no gradients):
where each label's pooling looks, beside where the evidence for its logit lies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from medllama_fusion.extras import require
from medllama_fusion.models import FusionModel

__all__ = [
    "Attributions",
    "LabelAttentionWeights",
    "integrated_gradients",
    "label_attention",
    "patch_grid",
]


@dataclass
class Attributions:
    """Attributions of one target label for a batch.

    Attributes:
        tokens: ``[B, L]`` per-token scores (0 at padding) or ``None`` without text.
        patches: ``[B, P]`` per-patch scores or ``None`` without an image.
        delta: ``[B]`` Integrated Gradients convergence delta (completeness error).
    """

    tokens: Tensor | None
    patches: Tensor | None
    delta: Tensor


@dataclass
class LabelAttentionWeights:
    """The head's per-label attention weights for a batch (``pooling="label_attention"``).

    Attributes:
        tokens: ``[B, C, L]`` weights over the report tokens (0 at padding, summing to 1 over
            a report's tokens) or ``None`` without text.
        patches: ``[B, C, P]`` weights over the image patches (row-major patch grid) or
            ``None`` without an image.
    """

    tokens: Tensor | None
    patches: Tensor | None


@contextmanager
def _embeddings_replaced(
    model: FusionModel, text: Tensor | None, image: Tensor | None
) -> Iterator[None]:
    """Make ``embed_text`` / ``embed_image`` return the given tensors during ``forward``."""
    if text is not None:
        model.embed_text = lambda input_ids, ctx: text  # type: ignore[method-assign]
    if image is not None:
        model.embed_image = lambda pixel_values, ctx: image  # type: ignore[method-assign]
    try:
        yield
    finally:
        model.__dict__.pop("embed_text", None)
        model.__dict__.pop("embed_image", None)


def patch_grid(model: FusionModel) -> tuple[int, int]:
    """``(rows, cols)`` of the model's patch grid (square images)."""
    side = round(model.vision.num_patches**0.5)
    return side, model.vision.num_patches // max(side, 1)


def integrated_gradients(
    model: FusionModel,
    target: int,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    pixel_values: Tensor | None = None,
    pad_token_id: int = 0,
    black_value: float | None = None,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
) -> Attributions:
    """Integrated Gradients of logit ``target`` w.r.t. token embeddings and patch tokens.

    Args:
        model: The fusion model (put in eval mode here).
        target: Label index.
        input_ids: ``[B, L]`` or ``None``.
        attention_mask: ``[B, L]`` or ``None``.
        pixel_values: ``[B, C, H, W]`` normalised images or ``None``.
        pad_token_id: Token whose embedding is the text baseline.
        black_value: Normalised value of a black pixel for the image baseline (``(0 - mean) /
            std``); default the minimum of ``pixel_values``.
        n_steps: Integration steps.
        internal_batch_size: Captum's chunk size (memory bound); default all steps at once.

    Returns:
        The attributions (float32, on the model's device).

    Raises:
        InputError: Without the ``explain`` extra (Captum).
    """
    require("explain", "Integrated Gradients")
    from captum.attr import IntegratedGradients

    model.eval()
    inputs: list[Tensor] = []
    baselines: list[Tensor] = []
    with torch.no_grad():
        ctx = model.prepare(input_ids, attention_mask, pixel_values)
        if input_ids is not None:
            text = model.embed_text(input_ids, ctx).detach()
            pad = model.embed_text(torch.full_like(input_ids, pad_token_id), ctx).detach()
            inputs.append(text)
            baselines.append(pad)
        if pixel_values is not None:
            image = model.embed_image(pixel_values, ctx).detach()
            fill = float(pixel_values.min()) if black_value is None else black_value
            black = model.embed_image(torch.full_like(pixel_values, fill), ctx).detach()
            inputs.append(image)
            baselines.append(black)
    has_text, has_image = input_ids is not None, pixel_values is not None

    def forward(*args: Tensor) -> Tensor:
        parts = list(args[: len(inputs)])
        ids, mask, pixels = args[len(inputs) :]
        text_in = parts.pop(0) if has_text else None
        image_in = parts.pop(0) if has_image else None
        with _embeddings_replaced(model, text_in, image_in):
            out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        return out.logits[:, target].float()

    ig = IntegratedGradients(forward)
    attributions, delta = ig.attribute(
        tuple(inputs),
        baselines=tuple(baselines),
        additional_forward_args=(input_ids, attention_mask, pixel_values),
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    scores = [a.float().sum(dim=-1).detach() for a in attributions]
    tokens = scores.pop(0) if has_text else None
    if tokens is not None and attention_mask is not None:
        tokens = tokens * attention_mask.to(tokens.dtype)
    patches = scores.pop(0) if has_image else None
    return Attributions(tokens, patches, delta.detach().float())


@torch.no_grad()
def label_attention(
    model: FusionModel,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    pixel_values: Tensor | None = None,
    text_present: Tensor | None = None,
    image_present: Tensor | None = None,
) -> LabelAttentionWeights | None:
    """Each label's attention over the tokens and patches, from one forward in eval mode.

    Args:
        model: The fusion model (put in eval mode here).
        input_ids: ``[B, L]`` or ``None``.
        attention_mask: ``[B, L]`` or ``None``.
        pixel_values: ``[B, C, H, W]`` normalised images or ``None``.
        text_present: ``[B]`` bool presence of the report per sample, or ``None``.
        image_present: ``[B]`` bool presence of the image per sample, or ``None``.

    Returns:
        The weights (float32, on the model's device; those of an absent modality are
        meaningless for that sample), or ``None`` when the model's head does not use label
        attention.
    """
    model.eval()
    if pixel_values is not None:
        pixel_values = pixel_values.to(model.backbone.dtype)
    out = model(input_ids, attention_mask, pixel_values, text_present, image_present)
    if out.text_attention is None and out.image_attention is None:
        return None

    def plain(weights: Tensor | None) -> Tensor | None:
        return None if weights is None else weights.detach().float()

    return LabelAttentionWeights(plain(out.text_attention), plain(out.image_attention))
