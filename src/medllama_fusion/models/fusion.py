"""Fusion models: a documented base class and the paper's parallel, serial and mixed variants.

Data flow (``B`` batch, ``L`` text length, ``P`` patches, ``D`` hidden size)::

    input_ids [B, L] ──embed_text──► text emb [B, L, D] ─┐
                                                         ├─ fuse ─► (text, image) ─ pool ─ classify
    pixel_values [B, C, H, W] ──embed_image──► patches ──┘

``fuse`` is the only variant-specific step:

* :class:`ParallelFusion` (early): cross layers on the embedding-level features, run beside the
  text and vision stacks; the cross outputs are added to the stacks' outputs.
* :class:`SerialFusion` (late): text stack and vision stack, then cross layers on their outputs.
* :class:`MixedFusion`: early cross layers (as parallel) and late cross layers (as serial).

``pool`` and ``classify`` belong to the head, chosen by ``pooling``: ``"mean"`` (masked mean per
modality, :class:`~medllama_fusion.models.heads.ClassificationHead`) or ``"label_attention"`` (one
attention query per label over the valid text tokens and the image patches,
:class:`~medllama_fusion.models.heads.LabelAttentionHead`; its weights are returned in
:attr:`FusionOutput.text_attention` / :attr:`FusionOutput.image_attention`).

Write a new variant by subclassing :class:`FusionModel`: override :meth:`FusionModel.cross_layout`
(how many early / late cross layers to build) and :meth:`FusionModel.fuse`, using the building
blocks :meth:`~FusionModel.encode_text`, :meth:`~FusionModel.encode_image` and
:meth:`~FusionModel.cross`. See ``examples/custom_fusion.py``.

What trains (``blocks_init="backbone"``, default): the backbone's first ``num_text_layers`` layers
form the text stack, the next ``VisionConfig.num_layers`` the vision blocks, and the next ones the
cross layers (one backbone layer per cross layer, copied into both directions). All of them are
frozen and LoRA-adapted. With ``blocks_init="random"`` vision/cross blocks are new and trained in
full (no LoRA). Patch/position embeddings, ``context_layernorm`` of cross blocks, the final
per-modality norms and the head always train. Token embeddings are always frozen.

Missing modalities: forwarding with ``input_ids=None`` or ``pixel_values=None`` runs the model on
the other modality only. Per sample, ``text_present`` / ``image_present`` (``[B]`` bool) mark a
modality as absent: that sample is computed exactly as if the modality were missing (the other
stream passes the cross layers unchanged and the absent modality's head contribution is zeroed).

Modality dropout (``modality_dropout=p``, training only): with probability ``p`` each sample that
has both modalities loses one of them (chosen uniformly), by the same per-sample mechanism.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from medllama_fusion.errors import check_choice
from medllama_fusion.models.backbone import BackboneConfig, LlamaBackbone
from medllama_fusion.models.heads import ClassificationHead, HeadPooling, LabelAttentionHead
from medllama_fusion.models.layers import (
    CrossAttentionLayer,
    RotaryEmbeddings,
    build_self_attention_mask,
    key_padding_mask,
    new_decoder_layer,
)
from medllama_fusion.models.state_mismatch import CheckpointMismatchError, describe_mismatch
from medllama_fusion.models.vision import VisionConfig, VisionEncoder
from medllama_fusion.tuners.lora import LoraSettings, inject_lora

__all__ = [
    "BlocksInit",
    "FusionContext",
    "FusionModel",
    "FusionOutput",
    "HeadPooling",
    "MixedFusion",
    "ParallelFusion",
    "SerialFusion",
]

#: Where vision/cross blocks start: pretrained backbone layers (frozen + LoRA) or new random ones.
BlocksInit = Literal["backbone", "random"]

_TRAINABLE_DTYPE = torch.float32
DEFAULT_VISION = VisionConfig()
DEFAULT_LORA = LoraSettings()


@dataclass
class FusionOutput:
    """Output of a fusion model.

    Attributes:
        logits: ``[B, num_labels]`` (apply sigmoid / BCE-with-logits outside).
        text_features: ``[B, D]`` pooled text features (``[B, num_labels, D]``, one per label,
            with ``pooling="label_attention"``), ``None`` when text is missing.
        image_features: ``[B, D]`` pooled image features (``[B, num_labels, D]`` with label
            attention), ``None`` when the image is missing.
        text_attention: ``[B, num_labels, L]`` each label's attention weights over the text
            tokens (0 at padding, summing to 1 over the valid tokens) with
            ``pooling="label_attention"``; ``None`` with mean pooling or without text.
        image_attention: ``[B, num_labels, P]`` each label's attention weights over the image
            patches (row-major patch grid) with ``pooling="label_attention"``; ``None``
            otherwise.
    """

    logits: Tensor
    text_features: Tensor | None = None
    image_features: Tensor | None = None
    text_attention: Tensor | None = None
    image_attention: Tensor | None = None


@dataclass
class FusionContext:
    """Per-forward tensors shared by all steps (masks and RoPE are built once per forward).

    Attributes:
        text_valid: ``[B, L]`` bool, True for real tokens (``None`` without text).
        text_self_mask: 4-D self-attention mask for the text stack.
        text_key_mask: ``[B, 1, 1, L]`` bool key mask for image→text cross-attention.
        text_rope: RoPE ``(cos, sin)`` for the text positions.
        image_rope: RoPE ``(cos, sin)`` for the patch positions.
        text_keep: ``[B, 1]`` 1/0 presence of text per sample (``text_present`` combined with
            modality dropout) or ``None`` (all present).
        image_keep: ``[B, 1]`` 1/0 presence of the image per sample or ``None``.
        text_attention: ``[B, num_labels, L]`` label attention over the text, set by
            :meth:`FusionModel.pool` with ``pooling="label_attention"``.
        image_attention: ``[B, num_labels, P]`` label attention over the patches, likewise.
    """

    text_valid: Tensor | None = None
    text_self_mask: Tensor | None = None
    text_key_mask: Tensor | None = None
    text_rope: RotaryEmbeddings | None = None
    image_rope: RotaryEmbeddings | None = None
    text_keep: Tensor | None = None
    image_keep: Tensor | None = None
    text_attention: Tensor | None = None
    image_attention: Tensor | None = None


def _add(a: Tensor | None, b: Tensor | None, keep: Tensor | None = None) -> Tensor | None:
    """``a + b``; where ``keep`` (``[B, 1]``) is 0 the sample keeps ``a`` alone."""
    if a is None:
        return b
    if b is None:
        return a
    if keep is None:
        return a + b
    return torch.where(keep[:, :, None] > 0, a + b, a)


def _presence(present: Tensor | None, batch: int, name: str, device: torch.device) -> Tensor | None:
    """Check a ``[B]`` presence flag and return it as a ``[B, 1]`` bool tensor (or ``None``)."""
    if present is None:
        return None
    if present.dim() != 1 or present.shape[0] != batch:
        raise ValueError(
            f"{name} must be a [B] tensor with B={batch} (one flag per sample), "
            f"got shape {tuple(present.shape)}."
        )
    return present.to(device=device, dtype=torch.bool)[:, None]


class FusionModel(nn.Module, ABC):
    """Base class of all fusion variants (LLaMA backbone + vision branch + cross layers + head).

    Subclasses implement :meth:`fuse` and, if they need cross layers at other places,
    :meth:`cross_layout`. Every other step (:meth:`embed_text`, :meth:`embed_image`,
    :meth:`encode_text`, :meth:`encode_image`, :meth:`cross`, :meth:`pool`, :meth:`classify`)
    can be overridden too.

    Args:
        backbone: Backbone configuration (where the LLaMA weights come from).
        vision: Vision branch configuration.
        lora: LoRA settings, or ``None`` for no LoRA (frozen backbone-derived blocks).
        num_labels: Number of output labels.
        num_cross_layers: Cross layers per fusion point.
        dropout: Dropout of the head.
        blocks_init: ``"backbone"`` (vision/cross blocks from pretrained layers, frozen + LoRA)
            or ``"random"`` (new blocks, trained in full).
        modality_dropout: Training-time probability of dropping one modality per sample.
        pooling: How the head pools each modality: ``"mean"`` (masked mean over the valid
            tokens / all patches) or ``"label_attention"`` (one attention query per label over
            them; each label reads its own words or patches, and the weights are returned for
            explanation).
        label_attention_size: Size of the attention projection with
            ``pooling="label_attention"`` (unused with mean pooling).
    """

    def __init__(
        self,
        backbone: BackboneConfig,
        vision: VisionConfig = DEFAULT_VISION,
        lora: LoraSettings | None = DEFAULT_LORA,
        num_labels: int = 14,
        num_cross_layers: int = 3,
        dropout: float = 0.1,
        blocks_init: BlocksInit = "backbone",
        modality_dropout: float = 0.0,
        pooling: HeadPooling = "mean",
        label_attention_size: int = 256,
    ) -> None:
        super().__init__()
        check_choice(blocks_init, BlocksInit, "blocks_init")
        check_choice(pooling, HeadPooling, "pooling")
        if label_attention_size < 1:
            raise ValueError(f"label_attention_size must be >= 1, got {label_attention_size}.")
        if num_cross_layers < 0:
            raise ValueError(f"num_cross_layers must be >= 0, got {num_cross_layers}.")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}.")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        self.blocks_init = blocks_init
        self.modality_dropout = modality_dropout
        self.pooling = pooling
        vision_from_backbone = (
            vision.init_from_backbone
            if vision.init_from_backbone is not None
            else blocks_init == "backbone"
        )
        cross_from_backbone = blocks_init == "backbone"
        num_early, num_late = self.cross_layout(num_cross_layers)
        extra = (vision.num_layers if vision_from_backbone else 0) + (
            num_early + num_late if cross_from_backbone else 0
        )
        self.backbone = LlamaBackbone(backbone, num_extra_layers=extra)
        llama_config = self.backbone.llama_config
        hidden = self.backbone.hidden_size
        # Everything created here trains and stays float32 whatever the base dtype: in bf16 an
        # update below ~0.4 % of a weight rounds away (1 - 1e-4 == 1). Inputs are cast where
        # low-precision base modules and float32 trainable modules meet.

        lora_blocks = [f"backbone.text_stack.layers.{i}" for i in range(len(self.backbone.layers))]
        if vision_from_backbone:
            vision_layers = self.backbone.take_extra_layers(vision.num_layers)
            lora_blocks += [f"vision.stack.layers.{i}" for i in range(vision.num_layers)]
        else:
            vision_layers = [
                new_decoder_layer(llama_config).to(_TRAINABLE_DTYPE)
                for _ in range(vision.num_layers)
            ]
        self.vision = VisionEncoder(vision, hidden, vision_layers)
        self.vision.embed.to(_TRAINABLE_DTYPE)

        def cross_layers(count: int, name: str) -> nn.ModuleList:
            if cross_from_backbone:
                sources = self.backbone.take_extra_layers(count)
                lora_blocks.extend(f"{name}.{i}" for i in range(count))
                return nn.ModuleList(
                    CrossAttentionLayer(llama_config, s, self.backbone.shared_copy(s))
                    for s in sources
                )
            return nn.ModuleList(
                CrossAttentionLayer(llama_config).to(_TRAINABLE_DTYPE) for _ in range(count)
            )

        self.early_cross = cross_layers(num_early, "early_cross")
        self.late_cross = cross_layers(num_late, "late_cross")
        norm_eps = llama_config.rms_norm_eps
        self.text_norm = LlamaRMSNorm(hidden, eps=norm_eps).to(_TRAINABLE_DTYPE)
        self.image_norm = LlamaRMSNorm(hidden, eps=norm_eps).to(_TRAINABLE_DTYPE)
        self.head: ClassificationHead | LabelAttentionHead
        if pooling == "label_attention":
            self.head = LabelAttentionHead(hidden, num_labels, dropout, label_attention_size)
        else:
            self.head = ClassificationHead(hidden, num_labels, dropout)
        self.head.to(_TRAINABLE_DTYPE)
        self.set_gradient_checkpointing(backbone.gradient_checkpointing)

        self.lora_modules: list[str] = []
        if lora is not None:
            self.lora_modules = inject_lora(self, lora, lora_blocks)
        frozen = self.backbone.frozen_modules
        for module in self.modules():
            trainable = module not in frozen
            for param in module.parameters(recurse=False):
                param.requires_grad_(trainable and param.is_floating_point())
        encoder = getattr(self.vision.embed, "encoder", None)
        if vision.freeze_encoder and isinstance(encoder, nn.Module):
            for param in encoder.parameters():
                param.requires_grad_(False)

    # ------------------------------------------------------------------ structure
    def cross_layout(self, num_cross_layers: int) -> tuple[int, int]:
        """Number of ``(early, late)`` cross layers to build (``early_cross``, ``late_cross``).

        Called in ``__init__`` before the layers exist. Default: both.

        Args:
            num_cross_layers: The constructor argument.

        Returns:
            ``(early, late)`` layer counts.
        """
        return num_cross_layers, num_cross_layers

    @property
    def num_labels(self) -> int:
        """Number of output labels."""
        return self.head.num_labels

    def reset_head(self, num_labels: int) -> None:
        """Rebuild the label-specific part of the head for ``num_labels`` outputs (fine-tuning).

        Mean pooling: the last ``Linear``. Label attention: the attention queries and the
        per-label scores (the shared projections are kept).
        """
        self.head.reset_classifier(num_labels)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch per-block activation checkpointing (training only) on or off."""
        self.backbone.text_stack.gradient_checkpointing = enabled
        self.vision.stack.gradient_checkpointing = enabled
        for layer in [*self.early_cross, *self.late_cross]:
            layer.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ steps
    def prepare(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor | None,
        pixel_values: Tensor | None,
        text_present: Tensor | None = None,
        image_present: Tensor | None = None,
    ) -> FusionContext:
        """Validate shapes and build masks, RoPE and modality-keep flags once per forward.

        Args:
            input_ids: ``[B, L]`` or ``None``.
            attention_mask: ``[B, L]`` (1 = token, 0 = pad) or ``None`` (all tokens valid).
            pixel_values: ``[B, C, H, W]`` or ``None``.
            text_present: ``[B]`` bool, False for samples without a report, or ``None``.
            image_present: ``[B]`` bool, False for samples without an image, or ``None``.

        Returns:
            The context passed to every step.
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("forward needs input_ids or pixel_values (got neither).")
        ctx = FusionContext()
        dtype = self.backbone.dtype
        batch = 0
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}.")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                    f"{tuple(input_ids.shape)}."
                )
            batch = input_ids.shape[0]
            ctx.text_valid = attention_mask.bool()
            sdpa = self.backbone.llama_config._attn_implementation != "eager"
            ctx.text_self_mask = build_self_attention_mask(
                ctx.text_valid, self.backbone.backbone_config.causal, dtype, as_bool=sdpa
            )
            ctx.text_key_mask = key_padding_mask(ctx.text_valid)[:, None, None, :]
            probe = torch.empty(0, dtype=dtype, device=input_ids.device)
            ctx.text_rope = self.backbone.rotary(probe, input_ids.shape[1])
        if pixel_values is not None:
            if batch and pixel_values.shape[0] != batch:
                raise ValueError(
                    f"pixel_values batch {pixel_values.shape[0]} != input_ids batch {batch}."
                )
            probe = torch.empty(0, dtype=dtype, device=pixel_values.device)
            ctx.image_rope = self.backbone.rotary(probe, self.vision.num_patches)
        text_keep = image_keep = None
        if input_ids is not None:
            text_keep = _presence(text_present, batch, "text_present", input_ids.device)
        if pixel_values is not None:
            batch = pixel_values.shape[0]
            image_keep = _presence(image_present, batch, "image_present", pixel_values.device)
        if (
            self.training
            and self.modality_dropout > 0
            and input_ids is not None
            and pixel_values is not None
        ):
            device = input_ids.device
            drop = torch.rand(batch, 1, device=device) < self.modality_dropout
            # only samples that have both modalities can lose one
            for keep in (text_keep, image_keep):
                if keep is not None:
                    drop = drop & keep
            drop_text = drop & (torch.rand(batch, 1, device=device) < 0.5)
            drop_image = drop & ~drop_text
            text_keep = ~drop_text if text_keep is None else text_keep & ~drop_text
            image_keep = ~drop_image if image_keep is None else image_keep & ~drop_image
        ctx.text_keep = text_keep.to(dtype) if text_keep is not None else None
        ctx.image_keep = image_keep.to(dtype) if image_keep is not None else None
        return ctx

    def embed_text(self, input_ids: Tensor, ctx: FusionContext) -> Tensor:
        """Token embeddings ``[B, L, D]`` (frozen backbone embedding)."""
        return self.backbone.embed(input_ids)

    def embed_image(self, pixel_values: Tensor, ctx: FusionContext) -> Tensor:
        """Patch tokens ``[B, P, D]`` (patchify / torchvision tokeniser + position embedding).

        The float32 tokeniser's output is cast to the base dtype, the dtype of both streams.
        """
        return self.vision.tokens(pixel_values).to(self.backbone.dtype)

    def encode_text(self, text: Tensor | None, ctx: FusionContext) -> Tensor | None:
        """Run the text stack (pretrained layers, RoPE, padding mask); ``None`` passes through."""
        if text is None:
            return None
        return self.backbone(text, ctx.text_self_mask, ctx.text_rope)  # type: ignore[no-any-return]

    def encode_image(self, image: Tensor | None, ctx: FusionContext) -> Tensor | None:
        """Run the vision stack (bidirectional, RoPE over patches); ``None`` passes through."""
        if image is None:
            return None
        assert ctx.image_rope is not None
        return self.vision(image, ctx.image_rope)  # type: ignore[no-any-return]

    def cross(
        self,
        layers: nn.ModuleList,
        text: Tensor | None,
        image: Tensor | None,
        ctx: FusionContext,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Run cross layers; with a missing modality the streams pass through unchanged.

        Per sample, a stream whose other modality is absent (keep flag 0) passes through
        unchanged too.

        Args:
            layers: ``self.early_cross`` or ``self.late_cross`` (or your own list).
            text: ``[B, L, D]`` or ``None``.
            image: ``[B, P, D]`` or ``None``.
            ctx: Forward context.

        Returns:
            The updated ``(text, image)``.
        """
        if text is None or image is None:
            return text, image
        text_gate = ctx.text_keep[:, :, None] if ctx.text_keep is not None else None
        image_gate = ctx.image_keep[:, :, None] if ctx.image_keep is not None else None
        for layer in layers:
            new_text, new_image = layer(text, image, ctx.text_key_mask, None, text_gate, image_gate)
            # a sample without the other modality passes through unchanged, exactly as when
            # that modality is missing for the whole batch
            if image_gate is not None:
                new_text = torch.where(image_gate > 0, new_text, text)
            if text_gate is not None:
                new_image = torch.where(text_gate > 0, new_image, image)
            text, image = new_text, new_image
        return text, image

    @abstractmethod
    def fuse(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Variant-specific fusion of embedding-level features into final streams.

        Args:
            text: Token embeddings ``[B, L, D]`` or ``None``.
            image: Patch tokens ``[B, P, D]`` or ``None``.
            ctx: Forward context.

        Returns:
            Final ``(text, image)`` streams (``None`` for a missing modality).
        """

    def pool(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Final RMSNorm per modality, then the head's pooling over valid tokens / all patches.

        Mean pooling gives ``[B, D]`` per modality; label attention gives ``[B, num_labels, D]``
        and stores its weights in ``ctx.text_attention`` / ``ctx.image_attention``.
        """
        text_features = image_features = None
        if text is not None:
            text_features, ctx.text_attention = self.head.pool(
                self.text_norm(text), ctx.text_valid, "text"
            )
        if image is not None:
            image_features, ctx.image_attention = self.head.pool(
                self.image_norm(image), None, "image"
            )
        return text_features, image_features

    def classify(
        self, text_features: Tensor | None, image_features: Tensor | None, ctx: FusionContext
    ) -> Tensor:
        """Head logits ``[B, num_labels]`` from pooled features.

        An absent modality (``None``, or keep flag 0 for a sample) contributes nothing.
        """
        return self.head(text_features, image_features, ctx.text_keep, ctx.image_keep)  # type: ignore[no-any-return]

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        text_present: Tensor | None = None,
        image_present: Tensor | None = None,
    ) -> FusionOutput:
        """Classify a batch; either modality may be ``None``.

        Args:
            input_ids: ``[B, L]`` token ids (right-padded).
            attention_mask: ``[B, L]`` 1 = token, 0 = pad.
            pixel_values: ``[B, C, H, W]`` images.
            text_present: ``[B]`` bool; a sample with False is treated exactly like a sample
                whose text is missing (its values in ``input_ids`` are ignored).
            image_present: ``[B]`` bool; a sample with False is treated exactly like a sample
                whose image is missing (its ``pixel_values`` are ignored).

        Returns:
            Logits, pooled features and, with ``pooling="label_attention"``, the attention
            weights (features and weights of an absent modality are meaningless for that
            sample).
        """
        ctx = self.prepare(input_ids, attention_mask, pixel_values, text_present, image_present)
        text = self.embed_text(input_ids, ctx) if input_ids is not None else None
        image = self.embed_image(pixel_values, ctx) if pixel_values is not None else None
        text, image = self.fuse(text, image, ctx)
        text_features, image_features = self.pool(text, image, ctx)
        logits = self.classify(text_features, image_features, ctx)
        return FusionOutput(
            logits, text_features, image_features, ctx.text_attention, ctx.image_attention
        )

    # ------------------------------------------------------------------ checkpoints
    def frozen_module_names(self) -> list[str]:
        """Names of the modules that hold the frozen backbone-derived base, as they are now.

        Derived from :attr:`LlamaBackbone.frozen_modules` at call time, so the names follow
        the model's current structure (the frozen ``Linear`` of a LoRA-adapted projection is
        ``<name>.base_layer``). A module registered under several names is listed once, under
        its first name.

        Returns:
            Module names in ``named_modules()`` order.
        """
        frozen = self.backbone.frozen_modules
        return [name for name, module in self.named_modules() if module in frozen]

    def frozen_state_keys(self) -> set[str]:
        """The ``state_dict`` keys of the frozen base (left out of :meth:`adapter_state_dict`).

        All entries the frozen modules write themselves (with a quantized base also the
        quantization state of each weight), under the names of :meth:`frozen_module_names`.

        Returns:
            The keys.
        """
        modules = dict(self.named_modules())
        keys: set[str] = set()
        for name in self.frozen_module_names():
            dest: dict[str, Any] = {}
            modules[name]._save_to_state_dict(dest, f"{name}." if name else "", True)
            keys.update(dest)
        return keys

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Everything except the frozen backbone-derived base (rebuilt from the config).

        Contains LoRA weights, new layers, norms, the head, trainable parameters and
        persistent buffers of new modules (also a frozen torchvision encoder). Keys are the
        model's ``state_dict`` keys, stable across rebuilds.

        Kept by hand because PEFT's ``get_peft_model_state_dict`` covers only the LoRA part
        (the same tensors, keys without ``.default``), not the new modules PEFT does not know.

        Returns:
            The adapter state (tensors detached, on their current device).
        """
        base = self.frozen_state_keys()
        return {k: v for k, v in self.state_dict().items() if k not in base}

    def load_adapter_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Restore what :meth:`adapter_state_dict` returned.

        Args:
            state_dict: The adapter state.

        Raises:
            CheckpointMismatchError: Naming the setting that likely differs (LoRA rank or
                targets, fusion variant, layers, labels) and the first missing, unexpected and
                shape-mismatched tensors.
        """
        problem = describe_mismatch(self.adapter_state_dict(), state_dict)
        if problem:
            raise CheckpointMismatchError(problem)
        self.load_state_dict(state_dict, strict=False)

    def trainable_parameter_report(self) -> dict[str, Any]:
        """Count parameters: totals and per group (``lora`` or top-level module name).

        Returns:
            ``{"trainable": int, "total": int, "trainable_fraction": float,
            "groups": {group: {"trainable": int, "total": int}}}``. Quantized weights are
            counted by stored elements.
        """
        groups: dict[str, dict[str, int]] = {}
        trainable = total = 0
        for name, param in self.named_parameters():
            group = "lora" if ".lora_" in name else name.split(".", 1)[0]
            entry = groups.setdefault(group, {"trainable": 0, "total": 0})
            count = param.numel()
            entry["total"] += count
            total += count
            if param.requires_grad:
                entry["trainable"] += count
                trainable += count
        return {
            "trainable": trainable,
            "total": total,
            "trainable_fraction": trainable / max(total, 1),
            "groups": groups,
        }


class ParallelFusion(FusionModel):
    """Early fusion: cross layers on embedding-level features beside the modality stacks.

    ``text = text_stack(emb) + cross(emb, patches).text``, likewise for the image.
    """

    def cross_layout(self, num_cross_layers: int) -> tuple[int, int]:
        """Only early cross layers."""
        return num_cross_layers, 0

    def fuse(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Stacks and early cross layers in parallel, outputs summed."""
        text_out = self.encode_text(text, ctx)
        image_out = self.encode_image(image, ctx)
        if text is None or image is None:
            return text_out, image_out
        cross_text, cross_image = self.cross(self.early_cross, text, image, ctx)
        return (
            _add(text_out, cross_text, ctx.image_keep),
            _add(image_out, cross_image, ctx.text_keep),
        )


class SerialFusion(FusionModel):
    """Late fusion: text stack and vision stack, then cross layers on their outputs."""

    def cross_layout(self, num_cross_layers: int) -> tuple[int, int]:
        """Only late cross layers."""
        return 0, num_cross_layers

    def fuse(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Stacks first, then late cross layers."""
        return self.cross(
            self.late_cross, self.encode_text(text, ctx), self.encode_image(image, ctx), ctx
        )


class MixedFusion(FusionModel):
    """Early (parallel) and late (serial) cross layers, ``num_cross_layers`` each."""

    def fuse(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """Early cross beside the stacks (summed), then late cross on the sums."""
        text_out = self.encode_text(text, ctx)
        image_out = self.encode_image(image, ctx)
        if text is None or image is None:
            return text_out, image_out
        cross_text, cross_image = self.cross(self.early_cross, text, image, ctx)
        return self.cross(
            self.late_cross,
            _add(text_out, cross_text, ctx.image_keep),
            _add(image_out, cross_image, ctx.text_keep),
            ctx,
        )
