from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import medllama_fusion.data.preprocessing as preprocessing_module
import medllama_fusion.datamodules.base as base_module
import medllama_fusion.datasets.openi as openi_dataset_module
from medllama_fusion.data.loaders import ResumableDataLoader
from medllama_fusion.data.splits import split_samples
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.datasets.base import FusionSample
from medllama_fusion.datasets.labels import MONAI_COLUMN_NAMES, OPENI_LABELS
from medllama_fusion.datasets.nlm_reports import load_openi_reports
from medllama_fusion.datasets.problems import DataProblemError
from tests.datamodules.build import csv_datamodule, openi_datamodule


def make_dm(root: Path, **kwargs: Any) -> FusionDataModule:
    options: dict[str, Any] = {"image_size": 32, "batch_size": 4, "max_length": 48}
    options.update(kwargs)
    return openi_datamodule(root, **options)


def csv_rows(root: Path, name: str) -> list[dict[str, str]]:
    with (root / name).open() as handle:
        return list(csv.DictReader(handle))


def test_csv_layout_batches_follow_spec(demo_root: Path) -> None:
    dm = make_dm(demo_root)
    assert dm.label_names == list(OPENI_LABELS) and dm.num_labels == 14  # before setup
    assert len(dm.preprocessing.loaded_tokenizer) <= 512
    dm.setup("fit")
    assert dm.source.resolved_layout == "csv" and dm.problems == []
    for split, name in (("train", "train.csv"), ("val", "validation.csv"), ("test", "test.csv")):
        rows = csv_rows(demo_root, name)
        assert [s.id for s in dm.samples[split]] == [r["id"] for r in rows]
        labels = torch.tensor(
            [[float(r[MONAI_COLUMN_NAMES[n]]) for n in OPENI_LABELS] for r in rows]
        )
        got = torch.cat([b["labels"] for b in dm.val_dataloader()]) if split == "val" else None
        if got is not None:
            assert torch.equal(got, labels)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "text_present",
        "pixel_values",
        "image_present",
        "labels",
        "ids",
        "index",
        "group_index",
    }
    assert batch["text_present"].all() and batch["image_present"].all()
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["pixel_values"].shape == (4, 1, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].shape == (4, 14) and batch["labels"].dtype == torch.float32
    assert isinstance(batch["ids"], list) and all(isinstance(i, str) for i in batch["ids"])
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) <= 48  # padded to longest
    pad = dm.preprocessing.pad_token_id
    assert pad == 0
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == pad)
    for row, length in zip(batch["attention_mask"], lengths, strict=True):  # right padding
        assert torch.all(row[: int(length)] == 1) and torch.all(row[int(length) :] == 0)


def test_pad_to_max_length_and_truncation(demo_root: Path) -> None:
    dm = make_dm(demo_root, pad_to_max_length=True, max_length=12)
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == (4, 12)
    assert batch["attention_mask"].sum(dim=1).max() == 12  # reports are longer: truncated


def test_raw_layout_labels_frontal_views_and_groups(demo_root: Path) -> None:
    dm = make_dm(demo_root, layout="raw", split_sizes=[0.6, 0.2, 0.2])
    dm.setup()
    reports, _ = load_openi_reports(demo_root)
    by_report = {r.report_id: r for r in reports}
    samples = [s for split in dm.samples.values() for s in split]
    assert len(samples) == len(reports)  # one image per report
    views = {
        r["imageid"]: r["View Position"] for r in csv_rows(demo_root, "nlmcxr_dicom_metadata.csv")
    }
    for sample in samples:
        assert views[sample.id] in ("PA", "AP")
        assert list(sample.labels or ()) == [float(v) for v in by_report[sample.group].labels]
        assert sample.image_path == demo_root / "NLMCXR_png" / f"{sample.id}.png"
    # the MONAI CSV (same data) gives the same label vector per image
    csv_labels = {
        r["id"].removesuffix(".png"): [float(r[MONAI_COLUMN_NAMES[n]]) for n in OPENI_LABELS]
        for name in ("train.csv", "validation.csv", "test.csv")
        for r in csv_rows(demo_root, name)
    }
    assert all(csv_labels[s.id] == list(s.labels or ()) for s in samples)
    assert [len(dm.samples[n]) for n in ("train", "val", "test")] == [24, 8, 8]
    batch = next(iter(dm.test_dataloader()))
    assert batch["labels"].shape == (4, 14)


def test_raw_layout_all_views_keeps_report_images_together(demo_root: Path) -> None:
    dm = make_dm(demo_root, layout="raw", views=["PA", "AP", "LL"], one_image_per_report=False)
    dm.setup()
    groups = {name: {s.group for s in dm.samples[name]} for name in dm.samples}
    assert sum(len(s) for s in dm.samples.values()) > 40  # laterals included
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])


def test_raw_layout_without_metadata_falls_back_to_first_image(demo_root: Path) -> None:
    (demo_root / "nlmcxr_dicom_metadata.csv").unlink()
    monkey_none = pytest.MonkeyPatch()
    monkey_none.setattr(openi_dataset_module, "find_view_metadata", lambda root, csv=None: None)
    try:
        dm = make_dm(demo_root, layout="raw")
        with pytest.warns(UserWarning, match="first image"):
            dm.setup()
    finally:
        monkey_none.undo()
    reports, _ = load_openi_reports(demo_root)
    assert {s.id for split in dm.samples.values() for s in split} == {
        r.image_ids[0] for r in reports
    }
    with pytest.raises(FileNotFoundError, match="metadata_csv"):
        make_dm(demo_root, layout="raw", metadata_csv=str(demo_root / "nope.csv")).setup()


def test_split_determinism_and_no_overlap() -> None:
    samples = [
        FusionSample(id=f"img{i}", image_path=Path("x"), text="t", group=f"rep{i // 2}")
        for i in range(100)
    ]
    first = split_samples(samples, (0.7, 0.1, 0.2), seed=1)
    again = split_samples(list(reversed(samples)), (0.7, 0.1, 0.2), seed=1)
    other = split_samples(samples, (0.7, 0.1, 0.2), seed=2)
    ids = {k: {s.id for s in v} for k, v in first.items()}
    assert ids == {k: {s.id for s in v} for k, v in again.items()}
    assert ids != {k: {s.id for s in v} for k, v in other.items()}
    groups = {k: {s.group for s in v} for k, v in first.items()}
    assert [len(groups[k]) for k in ("train", "val", "test")] == [35, 5, 10]
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"])
    assert not groups["val"] & groups["test"]
    counts = split_samples(samples, (30, 10, 10), seed=1)
    assert [len(counts[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    with pytest.raises(ValueError, match="sum to 1"):
        split_samples(samples, (0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="only 50"):
        split_samples(samples, (40, 10, 10))


def test_tokenization_happens_once(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = preprocessing_module.tokenize_reports

    def counting(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        calls.append(len(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(preprocessing_module, "tokenize_reports", counting)
    dm = make_dm(demo_root)
    dm.setup("fit")
    dm.setup("validate")
    for _ in range(2):  # two "epochs"
        for _batch in dm.train_dataloader():
            pass
        for _batch in dm.val_dataloader():
            pass
    assert len(calls) == 3 and sum(calls) == 40  # once per split, never per epoch

    tokenizer_calls: list[int] = []
    cache = demo_root / "cache"
    first = make_dm(demo_root, cache_dir=str(cache))
    first.setup()
    second = make_dm(demo_root, cache_dir=str(cache))
    tok_cls = type(second.preprocessing.loaded_tokenizer)
    original_call = tok_cls.__call__

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        tokenizer_calls.append(1)
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(tok_cls, "__call__", spy)
    second.setup()
    assert tokenizer_calls == []  # served from the on-disk cache
    assert second.datasets["train"].input_ids == first.datasets["train"].input_ids


def test_mask_label_words(demo_root: Path) -> None:
    dm = make_dm(demo_root, mask_label_words=True, max_length=128)
    dm.setup()
    tok = dm.preprocessing.loaded_tokenizer
    words = {
        tok.convert_ids_to_tokens(i)
        for ds in dm.datasets.values()
        for ids in ds.input_ids
        for i in ids
    }
    assert not words & {"effusion", "pneumothorax", "cardiomegaly", "nodule", "atelectasis"}
    assert {"findings", "impression", "no"} <= words


def test_loader_settings(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = make_dm(demo_root, num_workers=2, prefetch_factor=3)
    options = dm.loader.options(dm.collator())
    assert options["pin_memory"] == torch.cuda.is_available()
    assert options["persistent_workers"] and options["prefetch_factor"] == 3
    captured: dict[str, Any] = {}

    class FakeLoader:
        def __init__(self, dataset: Any, **kwargs: Any) -> None:
            captured.update(kwargs)

    dm.setup()
    train = dm.train_dataloader()
    assert isinstance(train, ResumableDataLoader) and train.shuffle
    assert train.num_workers == 2 and train.persistent_workers is True
    assert train.prefetch_factor == 3 and train.seed == dm.shuffle_seed
    monkeypatch.setattr(base_module, "DataLoader", FakeLoader)
    dm.val_dataloader()
    assert captured["num_workers"] == 2 and captured["persistent_workers"] is True
    assert captured["prefetch_factor"] == 3 and captured["shuffle"] is False
    single = make_dm(demo_root, num_workers=0, pin_memory=True).loader.options(None)
    assert single["pin_memory"] is True and not single["persistent_workers"]
    assert single["prefetch_factor"] is None


def test_download_calls_download_openi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    monkeypatch.setattr(
        openi_dataset_module, "download_openi", lambda root: seen.append(Path(root))
    )
    make_dm(tmp_path, download=True, tokenizer="unused").prepare_data()
    make_dm(tmp_path, download=False, tokenizer="unused").prepare_data()
    assert seen == [tmp_path]
    with pytest.raises(FileNotFoundError, match="download: true"):
        make_dm(tmp_path, layout="raw", tokenizer="unused").source.load()


# ------------------------------------------------------------------ bad input


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 4)


def break_csv_layout(root: Path) -> dict[str, str]:
    """Missing image, corrupt image, empty report, unknown label column. Returns kind → id."""
    rows = csv_rows(root, "train.csv")
    missing, broken, empty = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    (root / "images" / missing).unlink()
    corrupt(root / "images" / broken)
    rows[2]["report"] = "  "
    for row in rows:
        row["Mystery_Label"] = "0"
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {
        "missing_image": missing,
        "corrupt_image": broken,
        "empty_report": empty,
        "unknown_label_column": "Mystery_Label",
    }


def test_csv_bad_input_error_lists_all_problems_once(demo_root: Path) -> None:
    bad = break_csv_layout(demo_root)
    dm = make_dm(demo_root)
    with pytest.raises(DataProblemError) as info:
        dm.setup()
    message = str(info.value)
    for kind in ("corrupt_image", "unknown_label_column"):
        assert f"{kind} (1)" in message and bad[kind] in message
    assert len(info.value.problems) == 2  # a missing modality is not a problem


def test_csv_bad_input_skip_drops_and_reports(
    demo_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = break_csv_layout(demo_root)
    dm = make_dm(demo_root, bad_input="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert caplog.text.count("dropping 1 sample") == 1
    kept = {s.id for s in dm.samples["train"]}
    assert bad["corrupt_image"] not in kept
    assert {bad["missing_image"], bad["empty_report"]} <= kept  # one modality left: used
    assert len(kept) == len(csv_rows(demo_root, "train.csv")) - 1
    assert {p.kind for p in dm.problems} == {"corrupt_image", "unknown_label_column"}
    assert [p.item for p in dm.summary["used without image"]] == [bad["missing_image"]]
    assert [p.item for p in dm.summary["used without text"]] == [bad["empty_report"]]
    assert bad["missing_image"] in caplog.text and "used without text (1)" in caplog.text
    for batch in dm.train_dataloader():  # no crash mid-epoch; masks mark the missing ones
        for i, sample_id in enumerate(batch["ids"]):
            assert bool(batch["image_present"][i]) == (sample_id != bad["missing_image"])
            assert bool(batch["text_present"][i]) == (sample_id != bad["empty_report"])


def break_raw_layout(root: Path) -> dict[str, str]:
    """Malformed XML, empty report, missing image, corrupt image in the raw layout."""
    (root / "ecgen-radiology" / "999.xml").write_text("<eCitation><uId id='CXR999'/>")
    empty = (root / "ecgen-radiology" / "2.xml").read_text()
    start = empty.index('<AbstractText Label="FINDINGS">')
    end = empty.index("</Abstract>")
    (root / "ecgen-radiology" / "2.xml").write_text(empty[:start] + empty[end:])
    reports, _ = load_openi_reports(root, keep_empty=True)
    views = {r["imageid"]: r["View Position"] for r in csv_rows(root, "nlmcxr_dicom_metadata.csv")}
    frontal = [next(i for i in r.image_ids if views[i] != "LL") for r in reports]
    (root / "NLMCXR_png" / f"{frontal[3]}.png").unlink()
    corrupt(root / "NLMCXR_png" / f"{frontal[4]}.png")
    return {
        "malformed_xml": "999.xml",
        "empty_report": frontal[1],
        "missing_image": frontal[3],
        "corrupt_image": frontal[4],
    }


def test_raw_bad_input_error_and_skip(demo_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = break_raw_layout(demo_root)
    with pytest.raises(DataProblemError) as info:
        make_dm(demo_root, layout="raw").setup()
    message = str(info.value)
    for kind in ("malformed_xml", "corrupt_image"):
        assert kind in message and bad[kind] in message
    dm = make_dm(demo_root, layout="raw", bad_input="skip", split_sizes=[0.5, 0.25, 0.25])
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert caplog.text.count("dropping 1 sample") == 1
    ids = {s.id for split in dm.samples.values() for s in split}
    assert len(ids) == 40 - 1  # only the corrupt image is dropped
    assert bad["missing_image"] in ids and bad["corrupt_image"] not in ids
    assert {p.kind for p in dm.problems} == {"malformed_xml", "corrupt_image"}
    assert [p.item for p in dm.summary["used without text"]] == [bad["empty_report"]]
    assert [p.item for p in dm.summary["used without image"]] == [bad["missing_image"]]


def test_missing_label_column_is_fatal_even_when_skipping(demo_root: Path) -> None:
    rows = csv_rows(demo_root, "test.csv")
    with (demo_root / "test.csv").open("w", newline="") as handle:
        fields = [f for f in rows[0] if f != "Edema"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataProblemError, match="Edema"):
        make_dm(demo_root, bad_input="skip").setup()


# ------------------------------------------------------------------ generic CSV


def write_generic(root: Path) -> Path:
    """A MIMIC-like CSV: JPEG/PNG paths in subfolders, patient groups, split column 'validate'."""
    rows = [r for name in ("train.csv", "validation.csv", "test.csv") for r in csv_rows(root, name)]
    out = root / "generic.csv"
    (root / "files").mkdir()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "dicom_id",
                "subject_id",
                "path",
                "text",
                "split",
                "Cardiomegaly",
                "Pleural Effusion",
                "ViewPosition",
            ]
        )
        for index, row in enumerate(rows):
            pixels = np.asarray(Image.open(root / "images" / row["id"]))
            rel = f"files/p{index // 2}/{row['id']}.jpg"
            (root / rel).parent.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(root / rel, quality=90)
            split = ["train", "validate", "test"][index % 3] if index < 30 else "train"
            writer.writerow(
                [
                    row["id"],
                    f"p{index // 2}",
                    rel,
                    row["report"],
                    split,
                    row["Cardiomegaly"],
                    "-1" if index == 5 else row["Pleural-Effusion"],
                    "PA",
                ]
            )
    return out


def test_generic_csv_datamodule(demo_root: Path) -> None:
    path = write_generic(demo_root)
    tokenizer = str(demo_root / "tokenizer")
    dm = csv_datamodule(
        path,
        image_column="path",
        text_column="text",
        tokenizer=tokenizer,
        label_names=["Cardiomegaly", "Pleural Effusion"],
        id_column="dicom_id",
        split_column="split",
        uncertain_label=0.0,
        image_size=32,
        batch_size=5,
    )
    assert dm.num_labels == 2
    dm.setup()
    assert [len(dm.samples[k]) for k in ("train", "val", "test")] == [20, 10, 10]
    rows = {r["dicom_id"]: r for r in csv_rows(demo_root, "generic.csv")}
    for sample in dm.samples["val"]:
        row = rows[sample.id]
        effusion = 0.0 if row["Pleural Effusion"] == "-1" else float(row["Pleural Effusion"])
        assert sample.labels == (float(row["Cardiomegaly"]), effusion)
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].shape == (5, 2) and batch["pixel_values"].shape == (5, 1, 32, 32)

    seeded = csv_datamodule(
        path,
        image_column="path",
        text_column="text",
        tokenizer=tokenizer,
        label_names=["Cardiomegaly"],
        id_column="dicom_id",
        group_column="subject_id",
        split_sizes=[0.5, 0.25, 0.25],
        split_seed=4,
        image_size=32,
    )
    seeded.setup()
    patients = {k: {rows[s.id]["subject_id"] for s in v} for k, v in seeded.samples.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]

    strict = csv_datamodule(
        path,
        image_column="path",
        text_column="text",
        tokenizer=tokenizer,
        label_names=["Cardiomegaly", "Pleural Effusion"],
        id_column="dicom_id",
        split_column="split",
        image_size=32,
    )
    with pytest.raises(DataProblemError, match="invalid_label"):
        strict.setup()


@pytest.mark.real_assets
def test_real_reports_frontal_selection(tmp_path: Path) -> None:
    from tests.assets import asset_path

    tgz = asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    asset_path("torchxrayvision", "data/nlmcxr_dicom_metadata.csv.gz")
    (tmp_path / "NLMCXR_reports.tgz").symlink_to(tgz)
    dm = openi_datamodule(tmp_path, layout="raw", tokenizer="unused")
    loaded = dm.source.load()
    groups = [s.group for s in loaded.samples]
    assert len(groups) == len(set(groups)) == 3955  # one sample per report
    with_image = [s for s in loaded.samples if s.image_path is not None]
    assert len(with_image) == 3686  # one frontal image per report that has one (22 empty)
    assert sum(1 for s in with_image if s.text) == 3664
    assert set(loaded.image_absent.values()) == {"no_frontal_image"}
    assert loaded.problems == [] and loaded.notes == []
    labels = torch.tensor([s.labels for s in loaded.samples])
    assert labels.shape == (3955, 14) and labels.sum(dim=1).min() >= 0
    assert labels[:, OPENI_LABELS.index("No-Finding")].sum() > 1000
