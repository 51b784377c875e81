"""The shared data arguments are declared once, and the CLI still sees every one with its doc."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

from medllama_fusion.datamodules import CSVDataModule, FusionDataModule, OpenIDataModule

SET_BY_SUBCLASS = {"self", "tokenizer", "label_names", "source"}
SHARED = [n for n in inspect.signature(FusionDataModule).parameters if n not in SET_BY_SUBCLASS]


@pytest.mark.parametrize("cls", [OpenIDataModule, CSVDataModule])
def test_subclass_exposes_every_shared_argument_with_its_doc(cls: type) -> None:
    assert not set(SHARED) & set(inspect.signature(cls).parameters)  # declared once, in the base
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    helps = {a.dest.removeprefix("data."): a.help for a in parser._actions if a.dest != "help"}
    assert "source" not in helps
    for name in [*inspect.signature(cls).parameters, *SHARED]:
        if name == "kwargs":
            continue
        assert name in helps, name
        assert helps[name] and not str(helps[name]).startswith("(type"), name


def test_shared_argument_override_from_the_command_line() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(OpenIDataModule, "data")
    config = parser.parse_args(
        ["--data.root", "x", "--data.batch_size", "8", "--data.image_mean", "0.4"]
    )
    assert config.data.batch_size == 8 and config.data.image_mean == 0.4
    assert config.data.max_length == 256  # the base default
