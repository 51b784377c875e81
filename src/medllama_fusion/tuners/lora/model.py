"""Inject LoRA adapters into chosen linear layers of a model with PEFT."""

from __future__ import annotations

from collections.abc import Iterable

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from medllama_fusion.tuners.lora.config import LORA_TARGET_MODULES, LoraSettings

__all__ = ["inject_lora"]


def inject_lora(
    model: nn.Module, settings: LoraSettings, block_prefixes: Iterable[str]
) -> list[str]:
    """Add PEFT LoRA adapters to ``settings.target_modules`` inside the given blocks.

    Only modules whose full name starts with one of ``block_prefixes`` are adapted, so newly
    created, fully trained blocks stay LoRA-free. ``requires_grad`` is NOT managed here (PEFT
    marks only adapters trainable); the caller sets it afterwards.

    Args:
        model: The model to modify in place.
        settings: LoRA hyper-parameters.
        block_prefixes: Module-name prefixes of the blocks to adapt (e.g. ``"backbone.layers.0"``).

    Returns:
        The full names of the adapted modules.

    Raises:
        ValueError: When a target module name is unknown or no module matches.
    """
    unknown = [t for t in settings.target_modules if t not in LORA_TARGET_MODULES]
    if unknown:
        raise ValueError(
            f"lora.target_modules has unknown module name(s) {unknown}; "
            f"choose from {', '.join(LORA_TARGET_MODULES)}."
        )
    prefixes = tuple(p.rstrip(".") + "." for p in block_prefixes)
    targets = set(settings.target_modules)
    names = [
        name
        for name, _ in model.named_modules()
        if name.startswith(prefixes) and name.rsplit(".", 1)[-1] in targets
    ]
    if not prefixes:
        return []
    if not names:
        raise ValueError(
            f"lora.target_modules {sorted(targets)} matched no module under {list(prefixes)}; "
            "check the module names of the backbone."
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=names,
        bias="none",
    )
    inject_adapter_in_model(config, model)
    return names
