"""Source datasets own their files: OpenIDataset (raw NLM, MONAI CSVs) and CSVDataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from medllama_fusion.datasets import CSVDataset, OpenIDataset, SampleDataset
from medllama_fusion.datasets.labels import OPENI_LABELS
from medllama_fusion.errors import InputError
from tests.datasets.monai_fixture import read_ids, write_monai_root
from tests.datasets.test_openi import EXPECTED_LABELS, FIXTURES, _write


def test_openi_dataset_raw_layout_reads_the_xml(tmp_path: Path) -> None:
    _write(tmp_path, FIXTURES)
    dataset = OpenIDataset(tmp_path, layout="auto", views=[])  # no view table: first image
    assert isinstance(dataset, SampleDataset) and dataset.resolved_layout == "raw"
    loaded = dataset.load()
    assert loaded.splits is None and loaded.problems == []
    assert [s.id for s in dataset] == [
        "CXR1_1_IM-0001-3001",
        "CXR2_IM-0652-1001",
        "CXR10_IM-0002-2001",
    ]
    assert len(dataset) == 3 and dataset[2].group == "CXR10"
    assert dataset[2].image_path == tmp_path / "NLMCXR_png" / "CXR10_IM-0002-2001.png"
    for sample in dataset:
        positives = {OPENI_LABELS[i] for i, v in enumerate(sample.labels or ()) if v}
        assert positives == EXPECTED_LABELS[sample.group]
    assert "layout 'raw'" in repr(dataset)


def test_openi_dataset_monai_layout_keeps_the_files_split(tmp_path: Path) -> None:
    write_monai_root(tmp_path)
    dataset = OpenIDataset(tmp_path, label_names=["pleural other", "Cardiomegaly"])
    assert dataset.resolved_layout == "csv" and dataset.label_names == [
        "Pleural-Other",
        "Cardiomegaly",
    ]
    loaded = dataset.load()
    assert loaded.splits == {
        "train": read_ids(tmp_path, "train.csv"),
        "val": read_ids(tmp_path, "validation.csv"),
        "test": read_ids(tmp_path, "test.csv"),
    }
    assert loaded.split_sources["val"] == str(tmp_path / "validation.csv")
    first = loaded.samples[0]
    assert (
        first.image_path == tmp_path / "images" / first.id and first.group == first.id.split("_")[0]
    )


def test_openi_dataset_rejects_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="layout='nifti' is not supported; use one of 'auto'"):
        OpenIDataset(tmp_path, layout="nifti")


def test_csv_dataset_split_and_group_columns(tmp_path: Path) -> None:
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        "path,report,subject,split,Edema,Effusion\n"
        "a.png,Edema.,p1,train,1,0\n"
        "b.png,Clear.,p1,train,0,0\n"
        "c.png,Effusion.,p2,validate,0,1\n"
        "d.png,Clear.,p3,testing,0,0\n"
        "e.png,Clear.,p3,holdout,0,0\n",
        encoding="utf-8",
    )
    dataset = CSVDataset(csv_path, "path", "report", group_column="subject", split_column="split")
    assert dataset.label_names == ["Edema", "Effusion"]  # the remaining columns
    loaded = dataset.load()
    assert loaded.splits == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert [p.kind for p in loaded.problems] == ["unknown_split"]
    assert [s.group for s in dataset] == ["p1", "p1", "p2", "p3", "p3"]
    assert dataset[0].labels == (1.0, 0.0) and dataset[0].image_path == tmp_path / "a.png"
