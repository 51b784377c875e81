"""Data modules choose a source dataset; shared arguments are declared once, the CLI sees all."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from medllama_fusion.datamodules import CSVDataModule, FusionDataModule, OpenIDataModule
from medllama_fusion.datasets import OpenIDataset
from tests.datamodules.build import openi_datamodule

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
        ["--data.init_args.source.init_args.root", "x", "--data.init_args.loader.batch_size", "8", "--data.init_args.preprocessing.image_mean", "0.4"]
    )
    assert config.data.batch_size == 8 and config.data.image_mean == 0.4
    assert config.data.max_length == 256  # the base default


def test_any_source_dataset_can_be_split_and_batched(demo_root: Path) -> None:
    source = OpenIDataset(demo_root, layout="csv")
    options = {"image_size": 32, "batch_size": 4, "max_length": 48}
    generic = FusionDataModule(str(demo_root / "tokenizer"), source.label_names, source, **options)
    generic.setup()
    openi = openi_datamodule(demo_root, layout="csv", **options)
    openi.setup()
    for split in ("train", "val", "test"):
        assert [s.id for s in generic.samples[split]] == [s.id for s in openi.samples[split]]
    batch = next(iter(generic.train_dataloader()))
    assert batch["pixel_values"].shape[1:] == (1, 32, 32) and batch["labels"].shape[1] == 14
    assert generic.source_description() == openi.source_description()


def test_without_source_load_samples_says_what_to_do() -> None:
    with pytest.raises(NotImplementedError, match="OpenIDataModule or CSVDataModule"):
        FusionDataModule("tok", ["a"]).load_samples()
