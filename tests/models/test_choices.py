"""Choice arguments: the command line lists and checks them, Python callers get the same check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from torch import nn

from medllama_fusion.models import BackboneConfig, ParallelFusion, VisionConfig
from medllama_fusion.models.backbone import quantize_linear_layers
from medllama_fusion.tuners.lora import LORA_TARGET_MODULES, LoraSettings
from tests.models.conftest import TINY

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# parser key, allowed values, whether None is allowed too, a wrong value
CHOICES: list[tuple[str, tuple[Any, ...], bool, str]] = [
    ("fusion.blocks_init", ("backbone", "random"), False, "pretrained"),
    ("fusion.backbone.dtype", ("float32", "bfloat16", "float16"), False, "float64"),
    ("fusion.backbone.quantization", ("4bit", "8bit"), True, "3bit"),
    ("fusion.backbone.attn_implementation", ("sdpa", "eager"), False, "flash"),
    ("fusion.vision.encoder", ("patchify", "vit_b_16", "resnet18", "resnet50"), False, "vit"),
    ("fusion.vision.in_channels", (1, 3), False, "2"),
]


def _literal(values: tuple[Any, ...]) -> str:
    return f"Literal[{', '.join(map(repr, values))}]"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ParallelFusion, "fusion")
    parser.add_class_arguments(LoraSettings, "lora")
    return parser


def _help(parser: ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # undo line wrapping


def test_help_lists_the_values_of_every_choice() -> None:
    text = _help(_parser())
    for key, values, optional, _ in CHOICES:
        typ = f"Optional[{_literal(values)}]" if optional else _literal(values)
        assert f"--{key} " in text and typ in text, key
        if not optional:
            assert f"--{key} {{{','.join(map(str, values))}}}" in text, key
    assert f"list[{_literal(TARGETS)}]" in text
    assert LORA_TARGET_MODULES == TARGETS


@pytest.mark.parametrize(("key", "values", "optional", "wrong"), CHOICES)
def test_parser_rejects_a_wrong_choice_naming_the_values(
    key: str, values: tuple[Any, ...], optional: bool, wrong: str
) -> None:
    parser = _parser()
    good = parser.parse_args(["--fusion.backbone.config={}", f"--{key}={values[-1]}"])
    node: Any = good
    for part in key.split("."):
        node = getattr(node, part)
    assert node == values[-1]
    with pytest.raises(ArgumentError) as err:
        parser.parse_args(["--fusion.backbone.config={}", f"--{key}={wrong}"])
    assert key in str(err.value) and _literal(values) in str(err.value)


def test_parser_rejects_an_unknown_lora_target() -> None:
    parser = _parser()
    args = parser.parse_args(
        ["--fusion.backbone.config={}", "--lora.target_modules=[q_proj,up_proj]"]
    )
    assert args.lora.target_modules == ["q_proj", "up_proj"]
    with pytest.raises(ArgumentError) as err:
        parser.parse_args(["--fusion.backbone.config={}", "--lora.target_modules=[q_proj,qq]"])
    assert "lora.target_modules" in str(err.value) and _literal(TARGETS) in str(err.value)


def _allowed(values: tuple[Any, ...]) -> str:
    return re.escape(", ".join(map(repr, values)))


# a call with a wrong value, the start of its message, the allowed values it must name
RUNTIME_CASES: list[tuple[Callable[[], object], str, tuple[Any, ...]]] = [
    (
        lambda: ParallelFusion(BackboneConfig(config=dict(TINY)), blocks_init="pretrained"),  # type: ignore[arg-type]
        "blocks_init='pretrained'",
        ("backbone", "random"),
    ),
    (
        lambda: BackboneConfig(config=dict(TINY), dtype="float64"),  # type: ignore[arg-type]
        "BackboneConfig.dtype='float64'",
        ("float32", "bfloat16", "float16"),
    ),
    (
        lambda: BackboneConfig(config=dict(TINY), quantization="3bit"),  # type: ignore[arg-type]
        "BackboneConfig.quantization='3bit'",
        ("4bit", "8bit", None),
    ),
    (
        lambda: BackboneConfig(config=dict(TINY), attn_implementation="flash"),  # type: ignore[arg-type]
        "BackboneConfig.attn_implementation='flash'",
        ("sdpa", "eager"),
    ),
    (
        lambda: VisionConfig(encoder="vit"),  # type: ignore[arg-type]
        "VisionConfig.encoder='vit'",
        ("patchify", "vit_b_16", "resnet18", "resnet50"),
    ),
    (
        lambda: VisionConfig(in_channels=2),  # type: ignore[arg-type]
        "VisionConfig.in_channels=2",
        (1, 3),
    ),
    (
        lambda: quantize_linear_layers(nn.Linear(2, 2), "3bit", torch.float32),  # type: ignore[arg-type]
        "mode='3bit'",
        ("4bit", "8bit"),
    ),
]


@pytest.mark.parametrize(("make", "name", "values"), RUNTIME_CASES)
def test_python_callers_get_the_same_check(
    make: Callable[[], object], name: str, values: tuple[Any, ...]
) -> None:
    with pytest.raises(ValueError, match=rf"{re.escape(name)}.*{_allowed(values)}\."):
        make()


def test_lora_choices_at_runtime() -> None:
    with pytest.raises(ValueError, match=rf"\['qq_proj'\].*{re.escape(', '.join(TARGETS))}\."):
        LoraSettings(target_modules=["q_proj", "qq_proj"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="r must be 2, 4 or 8"):
        LoraSettings.paper_budget(16)  # type: ignore[arg-type]
