"""Data modules choose a source dataset by class_path; no argument list is written twice."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.datamodules import CSVDataModule, FusionDataModule, OpenIDataModule
from medllama_fusion.datasets import CSVDataset, OpenIDataset, SampleDataset
from medllama_fusion.datasets.base import LoadedSamples
from medllama_fusion.demo import DemoDataset
from tests.datamodules.build import openi_datamodule

SHARED = [n for n in inspect.signature(FusionDataModule).parameters if n != "self"]


@pytest.mark.parametrize(
    ("cls", "source"), [(OpenIDataModule, OpenIDataset), (CSVDataModule, CSVDataset)]
)
def test_subclass_exposes_every_shared_argument_with_its_doc(cls: type, source: type) -> None:
    own = set(inspect.signature(cls).parameters) - {"self", "kwargs"}
    assert own == {"source"}  # the rest is declared once, in FusionDataModule
    source_args = set(inspect.signature(source).parameters) - {"self"}
    assert not source_args & set(SHARED)  # the source's arguments are not repeated
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    helps = {a.dest.removeprefix("data."): a.help for a in parser._actions if a.dest != "help"}
    for name in SHARED:
        assert name in helps, name
        assert helps[name] and not str(helps[name]).startswith("(type"), name


def test_shared_argument_override_from_the_command_line() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(FusionDataModule, "data")
    config = parser.parse_args(
        [
            "--data.source",
            "OpenIDataset",
            "--data.source.init_args.root",
            "x",
            "--data.loader.batch_size",
            "8",
            "--data.preprocessing.image_mean",
            "0.4",
        ]
    )
    assert config.data.loader.batch_size == 8 and config.data.preprocessing.image_mean == 0.4
    assert config.data.preprocessing.max_length == 256  # the record's default
    assert config.data.source.class_path.endswith("OpenIDataset")


@pytest.mark.parametrize(
    ("flag", "value", "choices"),
    [
        ("--data.preprocessing.mask_mode", "phrase", "words"),
        ("--data.curation.bad_input", "ignore", "skip"),
        ("--data.source.init_args.layout", "flat", "csv"),
    ],
)
def test_choice_arguments_list_their_values(flag: str, value: str, choices: str) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(FusionDataModule, "data")
    base = ["--data.source", "OpenIDataset", "--data.source.init_args.root", "x"]
    with pytest.raises(Exception, match=choices):
        parser.parse_args([*base, flag, value])
    assert choices in parser.format_help() or flag.startswith("--data.source")


def test_any_source_dataset_can_be_split_and_batched(demo_root: Path) -> None:
    source = OpenIDataset(demo_root, layout="csv")
    options = {"image_size": 32, "batch_size": 4, "max_length": 48}
    generic = FusionDataModule(
        source,
        preprocessing=Preprocessing(image_size=32, max_length=48),
        loader=LoaderSettings(batch_size=4),
    )
    generic.setup()
    openi = openi_datamodule(demo_root, layout="csv", **options)
    openi.setup()
    for split in ("train", "val", "test"):
        assert [s.id for s in generic.samples[split]] == [s.id for s in openi.samples[split]]
    batch = next(iter(generic.train_dataloader()))
    assert batch["pixel_values"].shape[1:] == (1, 32, 32) and batch["labels"].shape[1] == 14
    assert generic.source_description() == openi.source_description()


def test_your_own_source_needs_only_load_and_describe(demo_root: Path) -> None:
    class Subset(SampleDataset):
        def __init__(self, root: Path) -> None:
            super().__init__(OpenIDataset(root).label_names)
            self.inner = OpenIDataset(root, layout="csv")

        def load(self, modalities: object = ("text", "image")) -> LoadedSamples:
            loaded = self.inner.load()
            loaded.samples = loaded.samples[:30]
            loaded.splits = None  # split seeded by report
            return loaded

        def describe(self) -> str:
            return "30 demo samples"

    dm = FusionDataModule(
        Subset(demo_root), preprocessing=Preprocessing(tokenizer=str(demo_root / "tokenizer"))
    )
    dm.setup()
    assert sum(len(split) for split in dm.samples.values()) == 30
    assert dm.source_description() == "30 demo samples"


def test_a_source_without_labels_says_what_to_do() -> None:
    class NoLabels(DemoDataset):
        def __init__(self) -> None:
            super().__init__("unused")
            self.label_names = []

    with pytest.raises(ValueError, match="names no label; give it label_names"):
        FusionDataModule(NoLabels())
