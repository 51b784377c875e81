"""Data without label columns is read as prediction-only data (no labels in the batches)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.datamodules.build import csv_datamodule, openi_datamodule


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medllama_fusion.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("unlabelled") / "demo"
    make_demo_dataset(root, n_reports=40, image_size=16, seed=0, layout="csv")
    return root


def _strip_labels(path: Path, keep: tuple[str, ...]) -> int:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keep)
        writer.writerows([row[k] for k in keep] for row in rows)
    return len(rows)


def test_monai_test_split_without_labels(root: Path) -> None:
    n_test = _strip_labels(root / "test.csv", ("id", "report"))
    data = openi_datamodule(root, layout="csv", max_length=32, image_size=16, verify_images=False)
    data.setup("predict")
    assert len(data.samples["test"]) == n_test
    assert all(sample.labels is None for sample in data.samples["test"])
    assert all(sample.labels is not None for sample in data.samples["train"])
    batch = next(iter(data.predict_dataloader()))
    assert "labels" not in batch and len(batch["ids"]) == min(n_test, data.loader.batch_size)


def test_generic_csv_without_labels_is_predicted_whole(root: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.csv"
    with open(root / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(new, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "report"])
        writer.writerows([f"images/{row['id']}", row["report"]] for row in rows)
    data = csv_datamodule(
        new,
        image_column="image",
        text_column="report",
        tokenizer=str(root / "tokenizer"),
        label_names=["Cardiomegaly", "Edema"],
        image_root=str(root),
        max_length=32,
        image_size=16,
        verify_images=False,
    )
    data.setup("predict")
    assert len(data.samples["test"]) == len(rows)  # not split: every row is predicted
    assert not data.samples["train"] and not data.samples["val"]
