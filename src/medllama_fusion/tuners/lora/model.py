"""Inject LoRA adapters into chosen linear layers of a model with PEFT."""

from __future__ import annotations

from collections.abc import Iterable

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import cast_adapter_dtype
from torch import nn

from medllama_fusion.tuners.lora.config import LoraSettings, _check_target_modules

__all__ = ["inject_lora"]


def inject_lora(
    model: nn.Module, settings: LoraSettings, block_prefixes: Iterable[str]
) -> list[str]:
    """Add PEFT LoRA adapters to ``settings.target_modules`` inside the given blocks.

    Only modules whose full name starts with one of ``block_prefixes`` are adapted, so newly
    created, fully trained blocks stay LoRA-free. ``requires_grad`` is NOT managed here (PEFT
    marks only adapters trainable); the caller sets it afterwards. Adapter weights are float32
    whatever the dtype of the adapted layers.

    Args:
        model: The model to modify in place.
        settings: LoRA hyper-parameters.
        block_prefixes: Module-name prefixes of the blocks to adapt (e.g. ``"backbone.layers.0"``).

    Returns:
        The full names of the adapted modules.

    Raises:
        ValueError: When a target module name is unknown or no module matches.
    """
    _check_target_modules(settings.target_modules, "lora.target_modules")
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
    # LoRA weights train in float32 above a bf16/fp16 base (what get_peft_model's
    # autocast_adapter_dtype does); PEFT casts inputs and outputs around them.
    cast_adapter_dtype(model, adapter_name="default", autocast_adapter_dtype=True)
    return names
