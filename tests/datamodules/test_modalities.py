"""``modalities`` and ``missing_modality``: text-only, image-only and per-sample masks."""

from __future__ import annotations

import csv
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.data.dataset import ImageReadError
from medllama_fusion.datamodules import OpenIDataModule
from medllama_fusion.errors import InputError
from tests.datamodules.build import openi_datamodule

FILES = ("train.csv", "validation.csv", "test.csv")
CONF = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"


def make_dm(root: Path, **kwargs: Any) -> OpenIDataModule:
    options: dict[str, Any] = {"image_size": 32, "batch_size": 64, "max_length": 48}
    options.update(kwargs)
    return openi_datamodule(root, **options)


def rewrite_reports(root: Path, blank: set[str] | None = None) -> None:
    """Blank the report of the given ids (all when ``None``) in the three CSV files."""
    for name in FILES:
        with (root / name).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            if blank is None or row["id"] in blank:
                row["report"] = ""
        with (root / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def all_batches(dm: OpenIDataModule, split: str) -> list[dict[str, Any]]:
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    return list(loader)


def test_text_only_needs_no_image_files(demo_root: Path) -> None:
    shutil.rmtree(demo_root / "images")
    shutil.rmtree(demo_root / "NLMCXR_png")
    with pytest.raises(InputError, match=r"modalities: \['text'\]"):
        make_dm(demo_root).setup()  # both modalities asked for, no image anywhere
    for layout in ("csv", "raw"):
        dm = make_dm(demo_root, modalities=["text"], layout=layout)
        dm.setup()
        assert sum(len(v) for v in dm.samples.values()) == 40
        assert not any(dm.summary.values())
        batch = next(iter(dm.test_dataloader()))
        assert "pixel_values" not in batch and "image_present" not in batch
        assert batch["text_present"].all() and batch["input_ids"].shape[0] == len(batch["ids"])


def test_image_only_needs_no_report_text(demo_root: Path) -> None:
    rewrite_reports(demo_root)
    with pytest.raises(InputError, match=r"modalities: \['image'\]"):
        make_dm(demo_root).setup()
    dm = make_dm(demo_root, modalities=["image"])
    dm.setup()
    assert sum(len(v) for v in dm.samples.values()) == 40
    batch = next(iter(dm.test_dataloader()))
    assert "input_ids" not in batch and "attention_mask" not in batch
    assert "text_present" not in batch
    assert batch["image_present"].all() and batch["pixel_values"].shape[1:] == (1, 32, 32)


def test_per_sample_masks_keep_and_drop(demo_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (demo_root / "test.csv").open(newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    no_image, no_text, neither = ids[0], ids[1], ids[2]
    (demo_root / "images" / no_image).unlink()
    (demo_root / "images" / neither).unlink()
    rewrite_reports(demo_root, {no_text, neither})

    dm = make_dm(demo_root)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert caplog.text.count("used without image") == 1
    assert [p.item for p in dm.summary["used without image"]] == [no_image]
    assert [p.item for p in dm.summary["used without text"]] == [no_text]
    assert [(p.kind, p.item) for p in dm.summary["not used"]] == [
        ("empty_report+missing_image", neither)
    ]
    (batch,) = all_batches(dm, "test")
    assert batch["ids"] == [i for i in ids if i != neither]
    row = {sample_id: i for i, sample_id in enumerate(batch["ids"])}
    assert batch["image_present"].tolist() == [i != no_image for i in batch["ids"]]
    assert batch["text_present"].tolist() == [i != no_text for i in batch["ids"]]
    assert torch.all(batch["pixel_values"][row[no_image]] == 0)
    assert batch["attention_mask"][row[no_text]].sum() == 0
    assert torch.all(batch["input_ids"][row[no_text]] == dm.preprocessing.pad_token_id)
    assert batch["index"].tolist() == list(range(len(batch["ids"])))
    assert len(set(batch["group_index"].tolist())) == len(batch["ids"])  # one image per report

    dropped = make_dm(demo_root, missing_modality="drop")
    dropped.setup()
    assert {p.item for p in dropped.summary["not used"]} == {no_image, no_text, neither}
    (batch,) = all_batches(dropped, "test")
    assert batch["image_present"].all() and batch["text_present"].all()
    assert len(batch["ids"]) == len(ids) - 3
    with pytest.raises(InputError, match="missing_modality"):
        make_dm(demo_root, missing_modality="ignore")
    with pytest.raises(InputError, match="modalities"):
        make_dm(demo_root, modalities=["audio"])


def test_truncated_image_names_file_and_sample(demo_root: Path) -> None:
    with (demo_root / "test.csv").open(newline="") as handle:
        first = next(csv.DictReader(handle))["id"]
    path = demo_root / "images" / first
    path.write_bytes(path.read_bytes()[:-40])  # cut inside the image data
    dm = make_dm(demo_root, verify_images=False)
    dm.setup()
    with pytest.raises(ImageReadError) as info:
        all_batches(dm, "test")
    assert str(path) in str(info.value) and repr(first) in str(info.value)
    assert isinstance(info.value, InputError)
    workers = make_dm(demo_root, verify_images=False, num_workers=1)
    workers.setup()
    with pytest.raises(ImageReadError) as info:
        all_batches(workers, "test")
    assert str(path) in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.parametrize("modalities", ["[text]", "[image]", "[text, image]"])
def test_modality_ablation_trains(demo_root: Path, tmp_path: Path, modalities: str) -> None:
    from medllama_fusion.cli.main import cli_main

    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONF),
            "--data.init_args.source.init_args.root",
            str(demo_root),
            "--data.init_args.preprocessing.modalities",
            modalities,
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
    assert list(cli.datamodule.modalities) == [m.strip() for m in modalities[1:-1].split(",")]
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert ("pixel_values" in batch) == ("image" in modalities)
    assert ("input_ids" in batch) == ("text" in modalities)
    loss = float(cli.trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss)
