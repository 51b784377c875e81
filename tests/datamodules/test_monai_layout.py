"""The MONAI TransCheX OpenI layout exactly as published (fixture written by hand)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.datamodules import OpenIDataModule
from medllama_fusion.datasets.problems import CSVEncodingError, EmptySplitError, SplitLeakError
from medllama_fusion.errors import InputError
from tests.datamodules.build import csv_datamodule, openi_datamodule
from tests.datasets.monai_fixture import read_ids, write_monai_root

FILES = ("train.csv", "validation.csv", "test.csv")


def make_dm(root: Path, **kwargs: Any) -> OpenIDataModule:
    options: dict[str, Any] = {"image_size": 16, "batch_size": 8, "max_length": 32}
    options.update(kwargs)
    return openi_datamodule(root, **options)


@pytest.mark.parametrize(
    ("index_column", "float_labels", "with_extension"),
    [(None, False, True), ("", True, True), ("Unnamed: 0", False, False)],
)
def test_published_layout_uses_every_row(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    index_column: str | None,
    float_labels: bool,
    with_extension: bool,
) -> None:
    root = write_monai_root(
        tmp_path,
        index_column=index_column,
        float_labels=float_labels,
        with_extension=with_extension,
    )
    dm = make_dm(root)
    assert dm.source.resolved_layout == "csv"
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    for split, name in zip(("train", "val", "test"), FILES, strict=True):
        assert [s.id for s in dm.samples[split]] == read_ids(root, name)
    assert sum(len(v) for v in dm.samples.values()) == 60
    for sample in dm.samples["train"]:
        assert sample.image_path is not None and sample.image_path.is_file()
        assert sample.image_path.name.startswith(sample.id.removesuffix(".png"))
        assert sample.group == sample.id.split("_")[0]  # grouped by report (CXR<n>)
    assert not dm.summary["used without image"] and not dm.summary["not used"]
    if index_column is None:
        assert dm.problems == []
    else:  # ignored with a note that names the column
        assert [p.kind for p in dm.problems] == ["index_column"] * 3
        shown = repr(index_column) if index_column else "'' (empty header)"
        assert all(shown in p.item for p in dm.problems)
        assert "index_column (3)" in caplog.text
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape == (8, 1, 16, 16)
    assert batch["labels"].shape == (8, 14) and set(batch["labels"].unique().tolist()) <= {0, 1}
    # several rows per report share a group index
    groups = dm.datasets["train"].group_index
    assert len(set(groups)) < len(groups)
    first = dm.samples["train"]
    for i, j in zip(range(len(first)), range(1, len(first)), strict=False):
        assert (groups[i] == groups[j]) == (first[i].group == first[j].group)


def test_report_in_two_split_files_is_a_leak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_monai_root(tmp_path)
    with (root / "train.csv").open(newline="") as handle:
        train = list(csv.reader(handle))
    with (root / "test.csv").open("a", newline="") as handle:  # same report, other image
        row = list(train[1])
        row[0] = row[0].replace("-3001.png", "-9001.png")
        csv.writer(handle).writerow(row)
        csv.writer(handle).writerow(train[2])  # the very same id
    (root / "images" / row[0]).write_bytes((root / "images" / train[1][0]).read_bytes())
    with pytest.raises(SplitLeakError) as info:
        make_dm(root).setup()
    message = str(info.value)
    assert str(root / "train.csv") in message and str(root / "test.csv") in message
    assert f"id {train[2][0]}" in message and row[0] in message
    assert isinstance(info.value, InputError)
    assert "split_leak: warn" in message
    dm = make_dm(root, split_leak="warn")  # a published split is used as it is, loudly
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert caplog.text.count("the same samples are in two splits") == 1
    assert train[2][0] in {s.id for s in dm.samples["test"]}


def test_split_file_without_usable_rows_is_an_error(tmp_path: Path) -> None:
    root = write_monai_root(tmp_path)
    header = (root / "validation.csv").read_text().splitlines()[0]
    (root / "validation.csv").write_text(header + "\n")
    with pytest.raises(EmptySplitError, match=r"val split .*validation\.csv"):
        make_dm(root).setup()


def test_cp1252_csv_needs_encoding(tmp_path: Path) -> None:
    root = write_monai_root(tmp_path)
    text = (root / "train.csv").read_text(encoding="utf-8")
    text = text.replace("Small left pleural effusion.", "Small left pleural effusion 38°C café.")
    (root / "train.csv").write_bytes(text.encode("cp1252"))  # as Excel saves it
    with pytest.raises(CSVEncodingError) as info:
        make_dm(root).setup()
    message = str(info.value)
    assert str(root / "train.csv") in message and "encoding: cp1252" in message
    assert "line 2" in message
    dm = make_dm(root, encoding="cp1252", layout="csv")
    dm.setup()
    assert "38°C café" in dm.samples["train"][0].text


def test_generic_csv_encoding_and_index_column(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "data.csv"
    path.write_bytes(
        b",path,report,Effusion\n0,a.png,\xe9panchement pleural,1\n".replace(b"\n", b"\r\n")
    )
    with pytest.raises(CSVEncodingError, match=r"data\.csv"):
        csv_datamodule(path, image_column="path", text_column="report", tokenizer="x")
    dm = csv_datamodule(
        path, image_column="path", text_column="report", tokenizer="x", encoding="cp1252"
    )
    assert dm.label_names == ["Effusion"]  # the index column is not a label


def test_ids_group_by_report_prefix_in_batches(tmp_path: Path) -> None:
    root = write_monai_root(tmp_path)
    dm = make_dm(root, batch_size=64)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    reports = [i.split("_")[0] for i in batch["ids"]]
    for a in range(len(reports)):
        for b in range(len(reports)):
            same = bool(batch["group_index"][a] == batch["group_index"][b])
            assert same == (reports[a] == reports[b])
    assert torch.equal(batch["index"], torch.arange(len(reports)))


def test_generic_csv_patient_in_two_splits_is_a_leak(tmp_path: Path) -> None:
    root = write_monai_root(tmp_path)
    path = tmp_path / "generic.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text", "patient", "split", "Edema"])
        for i, name in enumerate(read_ids(root, "train.csv")[:12]):
            split = ("train", "validate", "test")[i % 3]
            writer.writerow([f"images/{name}", "FINDINGS : x.", f"p{i // 2}", split, i % 2])
    options: dict[str, Any] = {
        "image_column": "path",
        "text_column": "text",
        "tokenizer": str(root / "tokenizer"),
        "split_column": "split",
        "label_names": ["Edema"],
        "image_size": 16,
    }
    csv_datamodule(path, **options).setup()  # without groups: no leak
    with pytest.raises(SplitLeakError) as info:
        csv_datamodule(path, group_column="patient", **options).setup()
    message = str(info.value)
    assert "split=train" in message and "split=val" in message and "report p0" in message


def test_published_layout_fits_tests_and_predicts_every_row(tmp_path: Path) -> None:
    from medllama_fusion.cli.main import cli_main

    root = write_monai_root(tmp_path / "data", index_column="")
    conf = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"

    def run(command: str, out: str, *extra: str) -> Any:
        return cli_main(
            [
                command,
                "--config",
                str(conf),
                "--data.init_args.source.init_args.root",
                str(root),
                "--trainer.default_root_dir",
                str(tmp_path / out),
                *extra,
            ]
        )

    cli = run(
        "fit", "fit", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"
    )
    assert sum(len(v) for v in cli.datamodule.samples.values()) == 60
    (ckpt, *_) = sorted((tmp_path / "fit").rglob("*.ckpt"))
    cli = run("test", "test", "--ckpt_path", str(ckpt))
    assert cli.model.test_report is not None
    run("predict", "predict", "--ckpt_path", str(ckpt))
    (predictions,) = list((tmp_path / "predict").rglob("predictions.csv"))
    with predictions.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == read_ids(root, "test.csv")  # every test row
