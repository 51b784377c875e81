"""The exported model folder: a trained model that loads without Lightning or its backbone.

``medllama-fusion export --config quickstart --ckpt_path last --output_dir my_model`` (or
:func:`~medllama_fusion.inference.pipeline.export_checkpoint`) merges every LoRA adapter into its
frozen layer with PEFT's ``LoraLayer.merge``, then writes

- ``model.safetensors``: every weight of the merged model (frozen base included),
- ``config.json``: the fusion class and its arguments (the backbone as a plain ``LlamaConfig``,
  no LoRA), the :class:`~medllama_fusion.data.preprocessing.Preprocessing` record (label names
  included) and the decision thresholds if any,
- ``tokenizer/``: the tokenizer (``save_pretrained``),
- ``README.md``: a model card (``huggingface_hub``).

:meth:`FusionPipeline.from_pretrained
<medllama_fusion.inference.pipeline.FusionPipeline.from_pretrained>` loads it (local folder or
hub repo) and gives the same outputs as the checkpoint within the dtype's tolerance;
``FusionPipeline.push_to_hub`` uploads it. A quantized (QLoRA) base cannot be merged exactly:
load such a run with ``quantization: null`` before exporting.

This is the format to send to others: opening it reads a safetensors file and JSON, and never
runs code from the files (a ``.ckpt`` is a pickle, for resuming your own runs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peft.tuners.lora import LoraLayer
from safetensors.torch import load_model, save_model
from torch import nn

from medllama_fusion.errors import InputError
from medllama_fusion.models import FusionModel, LabelAttentionHead

__all__ = [
    "EXPORT_FORMAT",
    "TOKENIZER_DIR",
    "WEIGHTS_NAME",
    "build_exported_model",
    "export_config",
    "load_weights",
    "merge_lora",
    "save_weights",
]

EXPORT_FORMAT = "medllama-fusion/2"
"""Format tag of an exported folder's ``config.json`` (a loader refuses other formats)."""
WEIGHTS_NAME = "model.safetensors"
"""File of the merged weights in an exported folder."""
TOKENIZER_DIR = "tokenizer"
"""Folder of the tokenizer in an exported folder."""

_STANDARD_ARGS = (
    "backbone",
    "vision",
    "lora",
    "num_labels",
    "num_cross_layers",
    "dropout",
    "blocks_init",
    "modality_dropout",
    "pooling",
    "label_attention_size",
)
_DROP_LLAMA_KEYS = (
    "transformers_version",
    "architectures",
    "torch_dtype",
    "dtype",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
)


def _untie(model: nn.Module) -> None:
    """Give every parameter reached through more than one module its own copy.

    Merging LoRA changes the base weight in place, so a weight shared by two adapted layers
    (e.g. the two directions of a cross layer) must be split first.
    """
    seen: set[int] = set()
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if id(param) in seen:
                setattr(
                    module,
                    name,
                    nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad),
                )
            seen.add(id(param))


def merge_lora(model: nn.Module) -> int:
    """Merge every PEFT LoRA adapter into its base layer and remove the adapter, in place.

    Args:
        model: A model with LoRA injected (``FusionModel``).

    Returns:
        The number of merged layers.

    Raises:
        InputError: When a base layer is quantized (its merge would not be exact).
    """
    _untie(model)
    merged = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if not isinstance(base, nn.Linear) or type(base) is not nn.Linear:
            raise InputError(
                f"{name} wraps a {type(base).__name__}, not a plain Linear (a quantized base?); "
                "load the checkpoint with backbone quantization: null before exporting."
            )
        module.merge(safe_merge=True)  # type: ignore[operator]
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
        merged += 1
    return merged


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def export_config(model: FusionModel, init: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the ``class_path``/``init_args`` that rebuild ``model``'s structure without LoRA.

    The backbone becomes a randomly initialised ``LlamaConfig`` of exactly the layers in use
    (weights come from the exported file), vision encoder weights are not downloaded again and
    ``lora`` is ``None`` (adapters are merged).

    Args:
        model: The fusion model.
        init: The model's own ``init_args`` (from a CLI config), for extra arguments of a user
            subclass; the standard arguments are read from the model.

    Returns:
        A JSON-serialisable dict.

    Raises:
        InputError: For a quantized backbone.
    """
    backbone = model.backbone
    source = backbone.backbone_config
    if source.quantization is not None:
        raise InputError(
            "a quantized backbone cannot be exported merged; load the checkpoint "
            "with backbone quantization: null first."
        )
    llama = {
        k: v
        for k, v in backbone.llama_config.to_dict().items()
        if not k.startswith("_") and k not in _DROP_LLAMA_KEYS
    }
    backbone_args = {
        **_plain(source),
        "pretrained": None,
        "gguf_file": None,
        "config": llama,
        "init_device": "cpu",
        "quantization": None,
        "gradient_checkpointing": False,
    }
    vision = {**_plain(model.vision.vision_config), "encoder_weights": None}
    init_args = {k: _plain(v) for k, v in dict(init or {}).items() if k not in _STANDARD_ARGS}
    init_args.update(
        backbone=backbone_args,
        vision=vision,
        lora=None,
        num_labels=model.num_labels,
        num_cross_layers=max(len(model.early_cross), len(model.late_cross)),
        dropout=float(model.head.dropout.p),
        blocks_init=model.blocks_init,
        modality_dropout=float(model.modality_dropout),
        pooling=model.pooling,
    )
    if isinstance(model.head, LabelAttentionHead):
        init_args["label_attention_size"] = model.head.attention_size
    cls = type(model)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def build_exported_model(config: Mapping[str, Any]) -> FusionModel:
    """Instantiate the model structure :func:`export_config` describes (random weights).

    Args:
        config: ``{"class_path": ..., "init_args": ...}``.

    Returns:
        The model in eval mode, weights still to be loaded.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(FusionModel, "fusion", fail_untyped=False)
    parsed = parser.parse_object({"fusion": dict(config)})
    model = parser.instantiate_classes(parsed).fusion
    assert isinstance(model, FusionModel)
    return model.eval()


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write all weights to a safetensors file (shared tensors stored once).

    The file gets the permissions of any new file (the process umask), like the other outputs.
    """
    save_model(model, str(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a :func:`save_weights` file into ``model`` (all keys required).

    Raises:
        InputError: When the file's tensors do not match the model.
    """
    _untie(model)
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path} does not match the model in config.json: missing {sorted(missing)[:10]}, "
            f"unexpected {sorted(unexpected)[:10]}; re-export the model."
        )
