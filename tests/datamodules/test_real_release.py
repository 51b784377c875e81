"""The real NLM OpenI reports (torchxrayvision wheel) with a few images, defaults only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medllama_fusion.data.splits import positive_counts, stratified_split_samples
from medllama_fusion.datasets.nlm_reports import (
    load_openi_reports,
    load_view_positions,
    select_images,
)
from medllama_fusion.demo import build_demo_tokenizer
from tests.assets import asset_path
from tests.datamodules.build import openi_datamodule

pytestmark = pytest.mark.real_assets


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Reports tgz + 5 frontal PNGs of non-empty reports + 2 of empty reports + a tokenizer."""
    tgz = asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    metadata = asset_path("torchxrayvision", "data/nlmcxr_dicom_metadata.csv.gz")
    root = tmp_path_factory.mktemp("openi")
    (root / "NLMCXR_reports.tgz").symlink_to(tgz)
    reports, _ = load_openi_reports(tgz, keep_empty=True)
    tsne = metadata.parent / "nlmcxr_tsne_pa.csv.gz"
    views = load_view_positions(metadata, tsne if tsne.is_file() else None)
    frontal = {r.report_id: select_images(r, ("PA", "AP"), views) for r in reports}
    full = [r for r in reports if not r.is_empty and frontal[r.report_id]][:5]
    empty = [r for r in reports if r.is_empty and frontal[r.report_id]][:2]
    (root / "NLMCXR_png").mkdir()
    rng = np.random.default_rng(0)
    written = []
    for report in [*full, *empty]:
        image_id = frontal[report.report_id][0]
        pixels = rng.integers(0, 256, (24, 24), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "NLMCXR_png" / f"{image_id}.png")
        written.append(image_id)
    texts = [f"{r.findings} {r.impression}" for r in reports]
    build_demo_tokenizer(texts).save_pretrained(str(root / "tokenizer"))  # type: ignore[attr-defined]
    return {
        "root": root,
        "reports": reports,
        "frontal": frontal,
        "empty_with_png": [frontal[r.report_id][0] for r in empty],
        "written": written,
    }


def test_raw_release_works_with_defaults(
    real_root: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    root = real_root["root"]
    assert isinstance(root, Path)
    reports = real_root["reports"]
    assert isinstance(reports, list) and len(reports) == 3955
    dm = openi_datamodule(root)  # defaults only
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    summaries = [r.getMessage() for r in caplog.records if "item(s) read" in r.getMessage()]
    assert len(summaries) == 1  # ONE summary
    summary = summaries[0]
    for kind in ("missing_image", "no_frontal_image", "empty_report", "not used"):
        assert kind in summary
    used = [s for split in dm.samples.values() for s in split]
    empty_total = sum(1 for r in reports if r.is_empty)
    assert empty_total == 28
    sections = {name: len(entries) for name, entries in dm.summary.items()}
    assert sections["used without text"] == 2  # empty reports with an image file
    assert {s.id for s in used if not s.text} == set(real_root["empty_with_png"])
    assert sections["not used"] == 26  # empty reports without an image file
    no_frontal = [p for p in dm.summary["used without image"] if p.kind == "no_frontal_image"]
    assert len(no_frontal) == 263
    assert len(used) == 3955 - 26
    assert sum(1 for s in used if s.image_path is not None and s.image_path.is_file()) == 7
    assert "positives per class and split" in caplog.text
    assert len({s.group for s in used}) == len(used)  # one sample per report
    batch = next(iter(dm.val_dataloader()))
    assert batch["image_present"].sum() <= 7 and batch["text_present"].all()


def test_stratified_split_puts_positives_in_val_and_test(real_root: dict[str, object]) -> None:
    root = real_root["root"]
    assert isinstance(root, Path)
    dm = openi_datamodule(root, modalities=["text"])
    loaded = dm.source.load()
    samples = [s for s in loaded.samples if s.text]
    splits = stratified_split_samples(samples, dm.split.sizes, seed=0)
    counts = positive_counts(splits, dm.num_labels)
    total = [sum(counts[name][i] for name in counts) for i in range(dm.num_labels)]
    groups = {name: {s.group_key for s in v} for name, v in splits.items()}
    assert not groups["train"] & groups["val"] and not groups["val"] & groups["test"]
    n = len(samples)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [
        n - round(0.03 * n) - round(0.10 * n),
        round(0.03 * n),
        round(0.10 * n),
    ]
    for i, label in enumerate(dm.label_names):
        if total[i] >= 10:
            assert counts["val"][i] >= 1, label
            assert counts["test"][i] >= 1, label
        if total[i] >= 100:  # common classes: close to their share
            assert abs(counts["test"][i] - 0.10 * total[i]) <= 0.03 * total[i] + 2, label


def test_raw_release_trains_through_the_cli_with_defaults(
    real_root: dict[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fit on the real release (3929 usable reports, 7 images on disk) with data defaults."""
    from medllama_fusion.cli.main import cli_main

    root = real_root["root"]
    assert isinstance(root, Path)
    conf = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"
    with caplog.at_level(logging.WARNING):
        cli = cli_main(
            [
                "fit",
                "--config",
                str(conf),
                "--data.init_args.source.init_args.root",
                str(root),
                "--data.init_args.source.init_args.layout",
                "raw",
                "--data.init_args.preprocessing.tokenizer",
                str(root / "tokenizer"),
                "--data.init_args.curation.verify_images",
                "true",
                "--trainer.default_root_dir",
                str(tmp_path / "out"),
                "--trainer.limit_train_batches",
                "4",
                "--trainer.limit_val_batches",
                "2",
            ]
        )
    assert "used without image" in caplog.text
    datamodule = cli.datamodule
    assert sum(len(split) for split in datamodule.samples.values()) == 3955 - 26
    assert cli.trainer.global_step == 4
    assert any((tmp_path / "out").rglob("checkpoints/*.ckpt"))
