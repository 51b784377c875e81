"""A LitData stream written once gives the same batches as the data module that wrote it."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser

from medllama_fusion.cli.main import main as run_cli
from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import Augmentation, Preprocessing
from medllama_fusion.data.streaming import METADATA_FILE, write_streaming_dataset
from medllama_fusion.datamodules import FusionDataModule, StreamingDataModule
from medllama_fusion.datasets import OpenIDataset
from medllama_fusion.errors import InputError
from tests.datasets.monai_fixture import write_monai_root

pytest.importorskip("litdata")

CONF = Path(__file__).resolve().parents[1] / "conf"
BATCHES = LoaderSettings(batch_size=8)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[FusionDataModule, Path]:
    base = tmp_path_factory.mktemp("stream")
    root = write_monai_root(base / "data")
    plain = FusionDataModule(
        OpenIDataset(root),
        preprocessing=Preprocessing(image_size=16, max_length=32),
        loader=BATCHES,
    )
    write_streaming_dataset(plain, base / "stream", num_workers=1, start_method="fork")
    return plain, base / "stream"


def assert_batches_equal(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert left.keys() == right.keys()
    for key, value in left.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == right[key].dtype, key
            assert torch.equal(value, right[key]), key
        else:
            assert value == right[key], key


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_batches_equal_the_plain_loader(
    written: tuple[FusionDataModule, Path], split: str
) -> None:
    plain, stream = written
    streaming = StreamingDataModule(str(stream), BATCHES)
    expected = list(getattr(plain, f"{split}_dataloader")())
    got = list(getattr(streaming, f"{split}_dataloader")())
    assert len(got) == len(expected) > 1
    for left, right in zip(expected, got, strict=True):
        assert {"input_ids", "pixel_values", "labels", "index", "group_index"} <= set(left)
        assert_batches_equal(left, right)


def test_train_samples_equal_the_plain_loader_by_id(
    written: tuple[FusionDataModule, Path],
) -> None:
    """The order differs (LitData shuffles), the augmented samples do not (same seeds)."""
    plain, stream = written
    streaming = StreamingDataModule(str(stream), BATCHES)
    fields = ("input_ids", "attention_mask", "pixel_values", "labels", "index", "group_index")

    def by_id(loader: Any) -> dict[str, dict[str, torch.Tensor]]:
        rows: dict[str, dict[str, torch.Tensor]] = {}
        for batch in loader:
            for row, sample_id in enumerate(batch["ids"]):
                rows[sample_id] = {name: batch[name][row] for name in fields}
        return rows

    expected, got = by_id(plain.train_dataloader()), by_id(streaming.train_dataloader())
    assert sorted(got) == sorted(expected) and len(got) == 40
    for sample_id, row in expected.items():
        width = int(row["attention_mask"].sum())
        assert torch.equal(got[sample_id]["input_ids"][:width], row["input_ids"][:width])
        for name in ("pixel_values", "labels", "index", "group_index"):
            assert torch.equal(got[sample_id][name], row[name]), (sample_id, name)
    assert torch.equal(streaming.train_labels, plain.train_labels)
    assert streaming.label_names == plain.label_names


def test_training_position_resumes_mid_epoch(written: tuple[FusionDataModule, Path]) -> None:
    _, stream = written
    first = StreamingDataModule(str(stream), BATCHES, Augmentation(enabled=False))
    ids = [batch["ids"] for batch in first.train_dataloader()]  # the first epoch's order
    iterator = iter(first.train_dataloader())  # a new loader: the same first epoch
    assert [next(iterator)["ids"], next(iterator)["ids"]] == ids[:2]
    second_run = StreamingDataModule(str(stream), BATCHES, Augmentation(enabled=False))
    second_run.load_state_dict(first.state_dict())
    assert [batch["ids"] for batch in second_run.train_dataloader()] == ids[2:]


def test_metadata_file(written: tuple[FusionDataModule, Path]) -> None:
    plain, stream = written
    meta = json.loads((stream / METADATA_FILE).read_text())
    assert meta["counts"] == {"train": 40, "val": 10, "test": 10}
    record = meta["preprocessing"]
    assert record["image_size"] == 16 and record["max_length"] == 32
    assert record["modalities"] == ["text", "image"]
    assert record["pad_token_id"] == plain.preprocessing.pad_token_id
    assert Preprocessing.from_dict(record) == plain.preprocessing
    assert torch.equal(torch.tensor(meta["train_labels"]), plain.train_labels)


def test_text_only_run_from_a_full_stream(written: tuple[FusionDataModule, Path]) -> None:
    _, stream = written
    batch = next(iter(StreamingDataModule(str(stream), modalities=["text"]).val_dataloader()))
    assert "input_ids" in batch and "pixel_values" not in batch


def test_not_a_stream_and_conflicts_are_input_errors(
    written: tuple[FusionDataModule, Path], tmp_path: Path
) -> None:
    plain, stream = written
    with pytest.raises(InputError, match="not a stream written by medllama-fusion"):
        StreamingDataModule(str(tmp_path))
    text_only = str(write_text_only_stream(plain, tmp_path / "text"))
    with pytest.raises(InputError, match=r"asks for more than the stream .* holds \(\['text'\]\)"):
        StreamingDataModule(text_only, modalities=["text", "image"])
    with pytest.raises(InputError, match="already exists and is not empty"):
        write_streaming_dataset(plain, stream, num_workers=1)


def write_text_only_stream(plain: FusionDataModule, output: Path) -> Path:
    text = FusionDataModule(
        plain.source, preprocessing=Preprocessing(max_length=32, modalities=("text",))
    )
    write_streaming_dataset(text, output, num_workers=1, start_method="fork")
    return output


def test_takes_only_the_arguments_it_uses_with_their_docs() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(StreamingDataModule, "data")
    helps = {a.dest.removeprefix("data."): a.help for a in parser._actions if a.dest != "help"}
    streaming = set(inspect.signature(StreamingDataModule).parameters)
    shared = streaming & set(inspect.signature(FusionDataModule).parameters)
    assert shared == {"loader", "augmentation", "model_compiles"}
    for name in shared:
        assert helps.get(name) and not str(helps[name]).startswith("(type"), name
    # what the stream fixed when it was written cannot be given again
    assert not streaming & {"source", "preprocessing", "curation", "split", "image_cache_dir"}


def test_optimize_then_fit_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_monai_root(tmp_path / "data")
    stream = tmp_path / "stream"
    common = ["--config", str(CONF / "tiny.yaml")]
    run_cli(
        [
            "optimize",
            *common,
            "--data.init_args.source.init_args.root",
            str(root),
            "--output_dir",
            str(stream),
            "--num_workers",
            "1",
            "--start_method",
            "fork",
        ]
    )
    assert f"stream written to {stream.resolve()} (train 40, val 10, test 10" in (
        capsys.readouterr().out
    )
    run_cli(
        [
            "fit",
            *common,
            "--data",
            "medllama_fusion.datamodules.StreamingDataModule",
            "--data.input_dir",
            str(stream),
            "--trainer.num_nodes",
            "1",
            "--trainer.devices",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ]
    )
    assert sorted((tmp_path / "run" / "tiny" / "version_0" / "checkpoints").glob("*.ckpt"))
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            [
                "optimize",
                *common,
                "--data.init_args.source.init_args.root",
                str(root),
                "--output_dir",
                str(stream),
            ]
        )
    assert stopped.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_missing_litdata_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from medllama_fusion.data.streaming import require_litdata

    monkeypatch.setitem(sys.modules, "litdata", None)
    with pytest.raises(InputError, match=r'pip install "medllama-fusion\[streaming\]"'):
        require_litdata()
