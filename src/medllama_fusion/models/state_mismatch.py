"""Say why stored weights do not fit a model: which tensors, and which setting differs.

A checkpoint of this library stores the adapter state of its fusion model (LoRA weights, new
layers, norms, head; the frozen base is rebuilt from the configuration). Loading it into a model
built with other settings fails on the first mismatched tensor; :func:`describe_mismatch`
compares the two sets of tensors and names what most likely differs: the LoRA rank or target
projections, LoRA on/off, the number of labels, the fusion variant (early and late cross
layers), the number of layers or the hidden size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from medllama_fusion.errors import InputError

__all__ = ["CheckpointMismatchError", "describe_mismatch"]

_LORA_A = re.compile(r"^(?P<module>.+)\.lora_A(?:\.[^.]+)?\.weight$")
_CROSS = re.compile(r"(?:^|\.)(?P<where>early_cross|late_cross)\.(?P<index>\d+)\.")
_STACK = re.compile(r"(?:^|\.)(?P<stack>text_stack|stack)\.layers\.(?P<index>\d+)\.")
_HEAD = re.compile(r"(?:^|\.)head\.[^.]+\.weight$")


class CheckpointMismatchError(InputError, ValueError):
    """Stored weights (a checkpoint's) do not fit the model built from the configuration."""


def _lora(state: Mapping[str, Tensor]) -> tuple[set[int], set[str]]:
    """The LoRA ranks and adapted projection names in ``state``."""
    ranks: set[int] = set()
    targets: set[str] = set()
    for key, value in state.items():
        match = _LORA_A.match(key)
        if match is not None:
            ranks.add(int(value.shape[0]))
            targets.add(match.group("module").rsplit(".", 1)[-1])
    return ranks, targets


def _cross(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Number of early and late cross layers with tensors in ``state``."""
    seen: dict[str, set[int]] = {"early_cross": set(), "late_cross": set()}
    for key in state:
        match = _CROSS.search(key)
        if match is not None:
            seen[match.group("where")].add(int(match.group("index")))
    return {where: len(indices) for where, indices in seen.items()}


def _layers(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Number of text and vision stack layers with tensors in ``state``."""
    seen: dict[str, set[int]] = {"text_stack": set(), "stack": set()}
    for key in state:
        match = _STACK.search(key)
        if match is not None:
            seen[match.group("stack")].add(int(match.group("index")))
    return {name: len(indices) for name, indices in seen.items()}


def _outputs(state: Mapping[str, Tensor]) -> int | None:
    """Rows of the head's last linear layer (the number of labels), if present."""
    rows = [int(v.shape[0]) for k, v in state.items() if _HEAD.search(k) and v.dim() == 2]
    return min(rows) if rows else None


def _variant(cross: Mapping[str, int]) -> str:
    early, late = cross["early_cross"], cross["late_cross"]
    if early and late:
        return f"{early} early + {late} late cross layers (MixedFusion)"
    if early:
        return f"{early} early cross layers (ParallelFusion)"
    if late:
        return f"{late} late cross layers (SerialFusion)"
    return "no cross layers"


def _settings(model: Mapping[str, Tensor], checkpoint: Mapping[str, Tensor]) -> list[str]:
    """The settings that differ, in the words of the configuration."""
    reasons: list[str] = []
    model_ranks, model_targets = _lora(model)
    ckpt_ranks, ckpt_targets = _lora(checkpoint)
    if ckpt_targets and not model_targets:
        reasons.append("the checkpoint has LoRA adapters, the model none (lora: null?)")
    elif model_targets and not ckpt_targets:
        reasons.append(
            "the model has LoRA adapters, the checkpoint none (it was trained with lora: null?)"
        )
    else:
        if ckpt_ranks and model_ranks and ckpt_ranks != model_ranks:
            reasons.append(
                f"LoRA rank {'/'.join(map(str, sorted(ckpt_ranks)))} in the checkpoint, "
                f"{'/'.join(map(str, sorted(model_ranks)))} in the config (lora.r)"
            )
        if ckpt_targets != model_targets:
            reasons.append(
                f"LoRA target_modules {sorted(ckpt_targets)} in the checkpoint, "
                f"{sorted(model_targets)} in the config (lora.target_modules)"
            )
    ckpt_cross, model_cross = _cross(checkpoint), _cross(model)
    if ckpt_cross != model_cross:
        reasons.append(
            f"{_variant(ckpt_cross)} in the checkpoint, {_variant(model_cross)} in the config "
            "(fusion class_path / num_cross_layers)"
        )
    ckpt_layers, model_layers = _layers(checkpoint), _layers(model)
    for stack, setting in (("text_stack", "num_text_layers"), ("stack", "vision.num_layers")):
        if ckpt_layers[stack] and model_layers[stack] and ckpt_layers[stack] != model_layers[stack]:
            reasons.append(
                f"{ckpt_layers[stack]} adapted {stack.replace('_', ' ')} layers in the "
                f"checkpoint, {model_layers[stack]} in the config ({setting})"
            )
    ckpt_outputs, model_outputs = _outputs(checkpoint), _outputs(model)
    if ckpt_outputs is not None and model_outputs is not None and ckpt_outputs != model_outputs:
        reasons.append(
            f"{ckpt_outputs} outputs in the checkpoint, {model_outputs} in the config "
            "(the label names)"
        )
    if not reasons:
        widths = {
            (k, tuple(v.shape), tuple(checkpoint[k].shape))
            for k, v in model.items()
            if k in checkpoint and v.shape != checkpoint[k].shape
        }
        if widths:
            reasons.append("tensor shapes differ (hidden size, image size or patch size?)")
    return reasons


def describe_mismatch(model: Mapping[str, Tensor], checkpoint: Mapping[str, Tensor]) -> str:
    """Describe how a checkpoint's tensors differ from a model's (empty when they fit).

    Args:
        model: The tensors the model expects (its adapter state).
        checkpoint: The checkpoint's tensors.

    Returns:
        One message: the settings that likely differ, then the first mismatched tensors; ``""``
        when the key sets and shapes agree.
    """
    missing = sorted(set(model) - set(checkpoint))
    unexpected = sorted(set(checkpoint) - set(model))
    shapes = sorted(
        f"{k} (checkpoint {tuple(checkpoint[k].shape)}, model {tuple(v.shape)})"
        for k, v in model.items()
        if k in checkpoint and tuple(checkpoint[k].shape) != tuple(v.shape)
    )
    if not (missing or unexpected or shapes):
        return ""
    reasons = _settings(model, checkpoint)
    parts = [
        "the checkpoint's weights do not fit the configured model"
        + (f": {'; '.join(reasons)}" if reasons else "")
        + "."
    ]
    for title, items in (
        ("shape differs", shapes),
        ("missing from the checkpoint", missing),
        ("unexpected (not in the model)", unexpected),
    ):
        if items:
            more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{title}: {', '.join(items[:3])}{more}.")
    parts.append(
        "Build the model with the settings it was trained with (the run's config.yaml), or "
        "pass the checkpoint of this configuration."
    )
    return " ".join(parts)
