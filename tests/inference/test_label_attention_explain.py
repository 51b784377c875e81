"""Explanations of a label-attention model carry each label's attention; export keeps the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.demo import build_demo_tokenizer
from medllama_fusion.inference.explain import explain_sample, label_attention
from medllama_fusion.inference.pipeline import FusionPipeline
from medllama_fusion.models import BackboneConfig, LabelAttentionHead, SerialFusion, VisionConfig
from medllama_fusion.tuners.lora import LoraSettings

LABELS = ["Cardiomegaly", "Pleural-Effusion", "Edema"]
REPORTS = ["The heart is enlarged.", "No pleural effusion. Lungs are clear."]


def _pipe(pooling: str) -> FusionPipeline:
    torch.manual_seed(0)
    tokenizer = build_demo_tokenizer(REPORTS)
    model = SerialFusion(
        backbone=BackboneConfig(
            config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=2,
                max_position_embeddings=64,
            ),
            num_text_layers=1,
        ),
        vision=VisionConfig(image_size=16, patch_size=4, num_layers=1),
        lora=LoraSettings(r=2),
        num_labels=len(LABELS),
        num_cross_layers=1,
        pooling=pooling,  # type: ignore[arg-type]
        label_attention_size=8,
    )
    with torch.no_grad():  # non-zero LoRA B so that merging changes the base weights
        for name, param in model.named_parameters():
            if "lora_B" in name or "queries" in name:
                param.normal_(0, 0.5)
    record = Preprocessing(max_length=16, image_size=16).complete(label_names=LABELS)
    return FusionPipeline(model.eval(), record.with_tokenizer(tokenizer))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    array = (np.arange(20 * 20).reshape(20, 20) % 251).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(array).save(path)
    return path


def test_explanation_carries_each_labels_attention(image_file: Path, tmp_path: Path) -> None:
    pipe = _pipe("label_attention")
    names = ["Cardiomegaly", "Edema"]
    result = explain_sample(
        pipe, image_file, REPORTS[0], names, "s1", output_dir=tmp_path / "la", n_steps=4
    )
    assert sorted(result.token_attention) == sorted(result.patch_attention) == sorted(names)
    batch = pipe.make_batch(image_file, REPORTS[0])
    weights = label_attention(
        pipe.model, batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    )
    assert weights is not None and weights.tokens is not None and weights.patches is not None
    for name in names:
        tokens = result.token_attention[name]
        assert len(tokens) == len(result.tokens) == len(result.token_scores[name])
        assert sum(tokens) == pytest.approx(1.0, abs=1e-5)
        assert len(result.patch_attention[name]) == (16 // 4) ** 2
        assert sum(result.patch_attention[name]) == pytest.approx(1.0, abs=1e-5)
        index = LABELS.index(name)
        assert tokens == pytest.approx(weights.tokens[0, index].tolist())
    assert not np.allclose(result.token_attention["Cardiomegaly"], result.token_attention["Edema"])
    assert result.html is not None and result.png is not None
    page = result.html.read_text()
    assert page.count("label attention (where this label") == len(names)
    # the PNG has a second row of heatmaps: the label attention over the patches
    mean = explain_sample(
        _pipe("mean"), image_file, REPORTS[0], names, "s1", tmp_path / "mean", n_steps=4
    )
    assert mean.token_attention == {} and mean.patch_attention == {}
    assert mean.html is not None and "label attention" not in mean.html.read_text()
    assert mean.png is not None
    with Image.open(result.png) as two_rows, Image.open(mean.png) as one_row:
        assert two_rows.height > 1.8 * one_row.height
        assert two_rows.width == one_row.width
    # without an image: attention over the tokens, none over the (absent) patches
    text_only = explain_sample(pipe, None, REPORTS[1], names, "s2", tmp_path / "t", n_steps=4)
    assert sorted(text_only.token_attention) == sorted(names)
    assert text_only.patch_attention == {}


def test_export_keeps_the_label_attention_head(image_file: Path, tmp_path: Path) -> None:
    pipe = _pipe("label_attention")
    batch = pipe.make_batch([image_file, image_file], REPORTS)
    before = pipe.logits(batch)
    pipe.save_pretrained(tmp_path / "model")
    loaded = FusionPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(loaded.model.head, LabelAttentionHead)
    assert loaded.model.head.attention_size == 8
    after = loaded.logits(loaded.make_batch([image_file, image_file], REPORTS))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
