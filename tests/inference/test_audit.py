"""The modality and leakage audit, judged with readers whose dependence on each input is known.

A reader that ignores the image must lose nothing when the image is removed and get a text share
of exactly 1 from the occlusion contribution; one that ignores the report the reverse. The masked
conditions must feed the model exactly what training with that masking mode feeds it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.demo import make_demo_dataset
from medllama_fusion.errors import InputError
from medllama_fusion.inference.audit import (
    AUDIT_CONDITIONS,
    audit,
    condition_scores,
    modality_contribution,
)
from medllama_fusion.models import FusionOutput
from tests.datamodules.build import openi_datamodule

SIZE = 32
PATCH = 8


class Reader(nn.Module):
    """Logits from fixed random weights on the mean token embedding and/or the patch means."""

    def __init__(self, reads: tuple[str, ...], num_labels: int = 14) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.reads = reads
        self.embedding = nn.Embedding(600, 8)
        self.text_head = nn.Linear(8, num_labels)
        self.image_head = nn.Linear((SIZE // PATCH) ** 2, num_labels)
        self.vision = SimpleNamespace(
            num_patches=(SIZE // PATCH) ** 2, vision_config=SimpleNamespace(image_size=SIZE)
        )
        self.backbone = SimpleNamespace(dtype=torch.float32)
        self.seen: list[Tensor] = []

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        text_present: Tensor | None = None,
        image_present: Tensor | None = None,
    ) -> FusionOutput:
        batch = (input_ids if input_ids is not None else pixel_values).shape[0]  # type: ignore[union-attr]
        logits = torch.zeros(batch, self.text_head.out_features)
        if "text" in self.reads and input_ids is not None:
            self.seen.append(input_ids)
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            if text_present is not None:
                mask = mask * text_present[:, None]
            embedded = (self.embedding(input_ids) * mask[..., None]).sum(1)
            logits = logits + self.text_head(embedded / mask.sum(1, keepdim=True).clamp(min=1))
        if "image" in self.reads and pixel_values is not None:
            cells = nn.functional.avg_pool2d(pixel_values.float(), PATCH).flatten(1)
            logits = logits + self.image_head(cells)
        return FusionOutput(logits=logits)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> FusionDataModule:
    root = tmp_path_factory.mktemp("audit") / "demo"
    make_demo_dataset(root, n_reports=60, image_size=SIZE, seed=3, layout="csv")
    data = openi_datamodule(root, layout="csv", max_length=48, image_size=SIZE)
    data.prepare_data()
    data.setup("test")
    return data


def test_a_reader_of_the_report_alone_loses_nothing_without_the_image(
    datamodule: FusionDataModule,
) -> None:
    report = audit(
        Reader(("text",)),  # type: ignore[arg-type]
        datamodule.datasets["test"],
        datamodule.preprocessing,
        contribution_samples=5,
        min_positives=1,
    )
    assert list(report.rows) == list(AUDIT_CONDITIONS)
    same = report.rows["no_image"]
    assert same is not None
    assert same.mean_difference == 0.0
    assert same.mean_ci == (0.0, 0.0)
    assert same.mean_p_value == 1.0
    # without the report the reader's scores are constant: every AUROC is 0.5
    assert report.macro["no_text"] == pytest.approx(0.5)
    assert report.contribution is not None
    assert report.contribution.samples == 5
    # exact but for float rounding between batch sizes (the occlusions run in batches)
    assert report.contribution.text == pytest.approx(1.0, abs=1e-5)
    assert report.contribution.image == pytest.approx(0.0, abs=1e-5)


def test_a_reader_of_the_image_alone_has_no_text_share(datamodule: FusionDataModule) -> None:
    report = audit(
        Reader(("image",)),  # type: ignore[arg-type]
        datamodule.datasets["test"],
        datamodule.preprocessing,
        contribution_samples=4,
        min_positives=1,
    )
    for condition in ("no_text", "mask_words", "mask_sentence"):
        row = report.rows[condition]
        assert row is not None
        assert row.mean_difference == 0.0
    assert report.macro["no_image"] == pytest.approx(0.5)
    assert report.contribution is not None
    assert report.contribution.text == pytest.approx(0.0, abs=1e-5)
    shares = report.contribution.per_class_text
    assert all(math.isnan(share) or share < 1e-5 for share in shares)


def test_masked_conditions_feed_what_training_with_that_mode_feeds(
    datamodule: FusionDataModule,
) -> None:
    dataset = datamodule.datasets["test"]
    pad = datamodule.preprocessing.pad_token_id
    for mode in ("words", "sentence"):
        reader = Reader(("text",))
        condition_scores(reader, dataset, datamodule.preprocessing, f"mask_{mode}", batch_size=64)  # type: ignore[arg-type]
        fed = [row[row != pad].tolist() for row in torch.cat(reader.seen)]
        trained = openi_datamodule(
            datamodule.source.root,  # type: ignore[attr-defined]
            layout="csv",
            max_length=48,
            image_size=SIZE,
            mask_label_words=True,
            mask_mode=mode,
        )
        trained.setup("test")
        assert [s.id for s in trained.datasets["test"].samples] == [s.id for s in dataset.samples]
        assert fed == trained.datasets["test"].input_ids
        assert fed != dataset.input_ids  # the demo reports name their findings


def test_one_image_patch_per_occlusion(datamodule: FusionDataModule) -> None:
    """Each occluded unit is one patch of the model's patch size (or one token)."""
    seen: list[Tensor] = []

    class Recorder(Reader):
        def forward(self, **kwargs: Any) -> FusionOutput:  # type: ignore[override]
            seen.append(kwargs["pixel_values"])
            return super().forward(**kwargs)

    modality_contribution(Recorder(("image",)), datamodule.datasets["test"], max_samples=1)  # type: ignore[arg-type]
    base, *occluded = torch.cat(seen).split(1)
    changed = [(image != base).squeeze().nonzero() for image in occluded]
    patches = [c for c in changed if len(c) and (c[:, 0].max() - c[:, 0].min()) < PATCH]
    assert len(patches) >= (SIZE // PATCH) ** 2 - 1  # a uniform patch may equal the mean
    assert all(len(c) <= PATCH * PATCH for c in changed)


def test_text_only_data_leaves_out_the_modality_rows_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, n_reports=40, image_size=SIZE, seed=4, layout="csv")
    data = openi_datamodule(root, layout="csv", max_length=48, modalities=["text"])
    data.prepare_data()
    data.setup("test")
    report = audit(
        Reader(("text",)),  # type: ignore[arg-type]
        data.datasets["test"],
        data.preprocessing,
        min_positives=1,
    )
    assert list(report.rows) == ["full", "mask_words", "mask_sentence"]
    assert report.contribution is None
    assert "no_image, no_text left out" in report.summary()


def test_an_unlabelled_split_is_an_input_error(datamodule: FusionDataModule) -> None:
    dataset = datamodule.datasets["test"]
    unlabelled = [dataclasses.replace(sample, labels=None) for sample in dataset.samples]
    copy = type(dataset).__new__(type(dataset))
    copy.__dict__.update(dataset.__dict__, samples=unlabelled)
    with pytest.raises(InputError, match="labelled split"):
        audit(Reader(("text",)), copy, datamodule.preprocessing)  # type: ignore[arg-type]


def test_report_files(datamodule: FusionDataModule, tmp_path: Path) -> None:
    report = audit(
        Reader(("text", "image")),  # type: ignore[arg-type]
        datamodule.datasets["test"],
        datamodule.preprocessing,
        contribution_samples=2,
        min_positives=1,
    )
    markdown, table = report.write(tmp_path / "out")
    text = markdown.read_text()
    assert text.count("| ") > 10 and "Modality contribution per class" in text
    lines = table.read_text().splitlines()
    assert lines[0] == "condition,description,macro_auroc,difference,ci_low,ci_high,p_value"
    assert [line.split(",")[0] for line in lines[1:]] == [
        *AUDIT_CONDITIONS,
        "modality_contribution_text",
    ]
