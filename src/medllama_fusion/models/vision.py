"""Vision encoder: image → patch tokens at the backbone's hidden size → LLaMA-style blocks.

Tokenisers ("encoders"):

* ``"patchify"`` (default): ``Conv2d(kernel=stride=patch_size)`` + learned position embedding.
* ``"vit_b_16"``, ``"resnet18"``, ``"resnet50"``: a torchvision network (weights from a local
  ``encoder_weights`` state-dict file when given) whose token/feature map is projected with a
  ``Linear`` to the hidden size, plus a learned position embedding. Grayscale input is repeated to
  3 channels for them.

The tokens then pass ``num_layers`` LLaMA decoder blocks (RMSNorm, attention, SwiGLU) run
bidirectionally with 1-D RoPE over the patch raster order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from medllama_fusion.errors import check_choice
from medllama_fusion.models.layers import LlamaBlockStack, RotaryEmbeddings

__all__ = [
    "ImageChannels",
    "PatchEmbedding",
    "TorchvisionEmbedding",
    "VisionConfig",
    "VisionEncoder",
    "VisionEncoderName",
]

#: Image tokeniser: conv patchify or a torchvision network.
VisionEncoderName = Literal["patchify", "vit_b_16", "resnet18", "resnet50"]
#: Input channels: grayscale or RGB.
ImageChannels = Literal[1, 3]


@dataclass
class VisionConfig:
    """Configuration of the image branch.

    Args:
        image_size: Input height and width (square images).
        patch_size: Patch size of the ``patchify`` encoder (must divide ``image_size``).
        in_channels: Input channels: 1 (grayscale) or 3 (RGB).
        encoder: ``"patchify" | "vit_b_16" | "resnet18" | "resnet50"``.
        encoder_weights: Local state-dict file for a torchvision encoder (``torch.load`` with
            ``weights_only=True``); ``None`` = random init.
        freeze_encoder: Freeze the torchvision encoder (its projection still trains). A frozen
            encoder stays in eval mode, so its BatchNorm statistics do not change either.
        num_layers: Number of LLaMA-style vision blocks after the tokeniser.
        init_from_backbone: Initialise the vision blocks from pretrained backbone layers
            (frozen + LoRA) or randomly (fully trained). ``None`` follows the fusion model's
            ``blocks_init``.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: ImageChannels = 1
    encoder: VisionEncoderName = "patchify"
    encoder_weights: str | None = None
    freeze_encoder: bool = False
    num_layers: int = 3
    init_from_backbone: bool | None = None

    def __post_init__(self) -> None:
        check_choice(self.encoder, VisionEncoderName, "VisionConfig.encoder")
        if self.image_size < 1 or self.patch_size < 1:
            raise ValueError("VisionConfig.image_size and patch_size must be positive.")
        if self.encoder == "patchify" and self.image_size % self.patch_size != 0:
            raise ValueError(
                f"VisionConfig.patch_size={self.patch_size} does not divide "
                f"image_size={self.image_size}; choose a divisor of the image size."
            )
        if self.encoder == "vit_b_16" and self.image_size % 16 != 0:
            raise ValueError(
                f"VisionConfig.image_size={self.image_size} must be a multiple of 16 for vit_b_16."
            )
        check_choice(self.in_channels, ImageChannels, "VisionConfig.in_channels")
        if self.num_layers < 0:
            raise ValueError(f"VisionConfig.num_layers must be >= 0, got {self.num_layers}.")
        if self.encoder_weights is not None and self.encoder == "patchify":
            raise ValueError(
                "VisionConfig.encoder_weights is only used by torchvision encoders; "
                "set encoder to vit_b_16/resnet18/resnet50 or drop encoder_weights."
            )


class PatchEmbedding(nn.Module):
    """Non-overlapping conv patchify + learned position embedding.

    Args:
        config: Vision configuration.
        hidden_size: Backbone hidden size.
    """

    def __init__(self, config: VisionConfig, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            config.in_channels, hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.position_embedding = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Image ``[B, C, H, W]`` → tokens ``[B, P, D]``."""
        tokens = self.proj(pixel_values).flatten(2).transpose(1, 2)
        return tokens + self.position_embedding


class TorchvisionEmbedding(nn.Module):
    """Torchvision ViT/ResNet features → ``Linear`` → tokens, plus learned position embedding.

    Args:
        config: Vision configuration.
        hidden_size: Backbone hidden size.

    Raises:
        FileNotFoundError: When ``encoder_weights`` does not exist.
        ValueError: When its keys/shapes do not match the chosen encoder.
    """

    def __init__(self, config: VisionConfig, hidden_size: int) -> None:
        super().__init__()
        import torchvision

        self.in_channels = config.in_channels
        name = config.encoder
        if name == "vit_b_16":
            net: nn.Module = torchvision.models.vit_b_16(weights=None, image_size=config.image_size)
        else:
            net = getattr(torchvision.models, name)(weights=None)
        if config.encoder_weights is not None:
            _load_encoder_weights(net, config.encoder_weights, name)
        self.is_vit = name == "vit_b_16"
        if self.is_vit:
            net.heads = nn.Identity()  # type: ignore[assignment]
            self.encoder: nn.Module = net
            features = 768
        else:
            features = int(net.fc.in_features)  # type: ignore[union-attr, arg-type]
            self.encoder = nn.Sequential(*list(net.children())[:-2])
        self.freeze_encoder = config.freeze_encoder
        if config.freeze_encoder:
            for param in self.encoder.parameters():
                param.requires_grad_(False)
        self.proj = nn.Linear(features, hidden_size)
        self.encoder.eval()  # BatchNorm cannot run a 1-sample batch in training mode
        with torch.no_grad():
            probe = torch.zeros(1, 3, config.image_size, config.image_size)
            self.num_patches = int(self._features(probe).shape[1])
        self.train()
        self.position_embedding = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)

    def train(self, mode: bool = True) -> TorchvisionEmbedding:
        """Set the training mode; a frozen encoder always stays in eval mode.

        A frozen encoder keeps its BatchNorm running statistics (and disables its dropout).

        Args:
            mode: Training (True) or evaluation (False) mode.

        Returns:
            ``self``.
        """
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def _features(self, images: Tensor) -> Tensor:
        if self.is_vit:
            vit = self.encoder
            x = vit._process_input(images)  # type: ignore[operator]
            cls = vit.class_token.expand(x.shape[0], -1, -1)  # type: ignore[union-attr, operator]
            x = vit.encoder(torch.cat([cls, x], dim=1))  # type: ignore[operator]
            return x[:, 1:]  # type: ignore[no-any-return]
        return self.encoder(images).flatten(2).transpose(1, 2)  # type: ignore[no-any-return]

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Image ``[B, C, H, W]`` → tokens ``[B, P, D]``."""
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.expand(-1, 3, -1, -1)
        pixel_values = pixel_values.to(self.proj.weight.dtype)
        return self.proj(self._features(pixel_values)) + self.position_embedding


def _load_encoder_weights(net: nn.Module, path: str, name: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"VisionConfig.encoder_weights={path!r} does not exist; give a local state-dict file."
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"encoder_weights {path!r} is not a state dict for {name}.")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"encoder_weights {path!r} does not fit torchvision {name}: "
            f"missing={missing[:10]}, unexpected={unexpected[:10]}, "
            f"shape-mismatched={mismatched[:10]}; save `{name}(...).state_dict()` "
            "with the same image_size."
        )
    net.load_state_dict(state, strict=True)


class VisionEncoder(nn.Module):
    """Image tokeniser (``embed``) followed by LLaMA-style blocks (``layers``).

    The fusion model calls :meth:`embed` and :meth:`forward` separately, because parallel
    fusion feeds the patch tokens (embedding-level features) to the cross layers too.

    Args:
        config: Vision configuration.
        hidden_size: Backbone hidden size.
        layers: The decoder blocks (pretrained copies or new ones).
    """

    def __init__(self, config: VisionConfig, hidden_size: int, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.vision_config = config
        self.embed: nn.Module = (
            PatchEmbedding(config, hidden_size)
            if config.encoder == "patchify"
            else TorchvisionEmbedding(config, hidden_size)
        )
        self.num_patches = int(self.embed.num_patches)  # type: ignore[arg-type]
        self.stack = LlamaBlockStack(layers, causal=False)

    def tokens(self, pixel_values: Tensor) -> Tensor:
        """Patch tokens ``[B, P, D]`` of images ``[B, C, H, W]``.

        Raises:
            ValueError: When the image shape does not match the configuration (shape check
                only, no host sync).
        """
        cfg = self.vision_config
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[-2:]) != (
            cfg.image_size,
            cfg.image_size,
        ):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; expected "
                f"[B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}] "
                "(VisionConfig.image_size)."
            )
        if pixel_values.shape[1] != cfg.in_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels; VisionConfig.in_channels="
                f"{cfg.in_channels}."
            )
        weight = next(self.embed.parameters())
        return self.embed(pixel_values.to(weight.dtype))  # type: ignore[no-any-return]

    def forward(self, tokens: Tensor, position_embeddings: RotaryEmbeddings) -> Tensor:
        """Run the vision blocks (bidirectional, no padding) on tokens ``[B, P, D]``."""
        return self.stack(tokens, None, position_embeddings)  # type: ignore[no-any-return]
