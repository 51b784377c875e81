"""Label-wise attention pooling: shapes, masking, missing modalities, learning a keyword."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medllama_fusion.models import (
    BackboneConfig,
    FusionModel,
    LabelAttentionHead,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
    VisionConfig,
)
from medllama_fusion.models.heads import ClassificationHead, LabelAttention
from medllama_fusion.tuners.lora import LoraSettings
from tests.models.conftest import TINY, make_batch

VARIANTS = [ParallelFusion, SerialFusion, MixedFusion]
VISION = VisionConfig(image_size=32, patch_size=8, num_layers=2)
PATCHES = (32 // 8) ** 2


def build(cls: type[FusionModel] = ParallelFusion, **kwargs: Any) -> FusionModel:
    backbone = kwargs.pop("backbone", BackboneConfig(config=dict(TINY), num_text_layers=2))
    kwargs.setdefault("vision", VISION)
    kwargs.setdefault("num_cross_layers", 2)
    kwargs.setdefault("num_labels", 14)
    kwargs.setdefault("pooling", "label_attention")
    kwargs.setdefault("label_attention_size", 16)
    torch.manual_seed(0)
    return cls(backbone, **kwargs).eval()


@pytest.mark.parametrize("cls", VARIANTS)
def test_shapes_and_attention_weights(cls: type[FusionModel]) -> None:
    model = build(cls)
    assert isinstance(model.head, LabelAttentionHead) and model.pooling == "label_attention"
    batch = make_batch(3, 9, pad_from=5)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (3, 14) and torch.isfinite(out.logits).all()
    assert out.text_features is not None and out.text_features.shape == (3, 14, 64)
    assert out.image_features is not None and out.image_features.shape == (3, 14, 64)
    assert out.text_attention is not None and out.text_attention.shape == (3, 14, 9)
    assert out.image_attention is not None and out.image_attention.shape == (3, 14, PATCHES)
    torch.testing.assert_close(out.text_attention.sum(-1), torch.ones(3, 14))
    torch.testing.assert_close(out.image_attention.sum(-1), torch.ones(3, 14))
    assert bool((out.text_attention[1, :, 5:] == 0).all())  # padding gets no weight
    # the mean head returns no attention
    mean = build(cls, pooling="mean")
    assert isinstance(mean.head, ClassificationHead)
    with torch.no_grad():
        plain = mean(**batch)
    assert plain.text_attention is None and plain.image_attention is None


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_changes_the_output(cls: type[FusionModel], causal: bool) -> None:
    model = build(cls, backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, causal=causal))
    batch = make_batch(3, 6)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    mask = mask.clone()
    mask[1, 4:] = 0
    with torch.no_grad():
        ref = model(ids, mask, pixels)
        other = ids.clone()
        other[1, 4:] = 7  # other pad token ids
        torch.testing.assert_close(model(other, mask, pixels).logits, ref.logits, atol=1e-5, rtol=0)
        pad = torch.zeros(3, 5, dtype=torch.long)
        longer = model(torch.cat([ids, pad + 3], 1), torch.cat([mask, pad], 1), pixels)
        torch.testing.assert_close(longer.logits, ref.logits, atol=1e-5, rtol=0)
        assert longer.text_attention is not None and ref.text_attention is not None
        torch.testing.assert_close(longer.text_attention[:, :, :6], ref.text_attention)
        assert bool((longer.text_attention[:, :, 6:] == 0).all())
        alone = model(ids[1:2, :4], mask[1:2, :4], pixels[1:2])
        torch.testing.assert_close(alone.logits, ref.logits[1:2], atol=1e-5, rtol=0)
        assert alone.text_attention is not None
        torch.testing.assert_close(
            alone.text_attention, ref.text_attention[1:2, :, :4], atol=1e-6, rtol=0
        )


def test_non_finite_states_at_padding_do_not_leak() -> None:
    attention = LabelAttention(8, 3, 4)
    states = torch.randn(2, 5, 8)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    features, weights = attention(states, valid)
    poisoned = states.clone()
    poisoned[0, 3:] = float("nan")
    features2, weights2 = attention(poisoned, valid)
    torch.testing.assert_close(features2, features)
    torch.testing.assert_close(weights2, weights)
    # a row without any valid position: zero weights and features, no NaN
    empty, none = attention(states, torch.zeros(2, 5, dtype=torch.bool))
    assert bool((empty == 0).all()) and bool((none == 0).all())


@pytest.mark.parametrize("cls", VARIANTS)
def test_missing_modality_contract(cls: type[FusionModel]) -> None:
    model = build(cls)
    batch = make_batch(3, 6, pad_from=4)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    image_present = torch.tensor([True, False, True])
    text_present = torch.tensor([True, True, False])
    with torch.no_grad():
        out = model(ids, mask, pixels, text_present, image_present)
        text_only = model(ids[1:2], mask[1:2], None)
        image_only = model(None, None, pixels[2:3])
        both = model(ids[0:1], mask[0:1], pixels[0:1])
        torch.testing.assert_close(out.logits[1:2], text_only.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.logits[2:3], image_only.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.logits[0:1], both.logits, atol=1e-5, rtol=0)
        assert text_only.image_attention is None and image_only.text_attention is None
        assert text_only.text_attention is not None and out.text_attention is not None
        torch.testing.assert_close(
            out.text_attention[1:2], text_only.text_attention, atol=1e-5, rtol=0
        )
        # whatever the absent modality holds, the sample's logits do not change
        pixels2, ids2 = pixels.clone(), ids.clone()
        pixels2[1] = 100.0
        ids2[2] = 5
        again = model(ids2, mask, pixels2, text_present, image_present)
        torch.testing.assert_close(again.logits, out.logits, atol=1e-5, rtol=0)


def test_modality_dropout_is_a_missing_modality() -> None:
    model = build(
        ParallelFusion, modality_dropout=0.9, dropout=0.0, lora=LoraSettings(dropout=0.0)
    ).train()
    batch = make_batch(16, 6)
    torch.manual_seed(3)
    with torch.no_grad():
        ctx = model.prepare(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        torch.manual_seed(3)
        out = model(**batch).logits
    assert ctx.image_keep is not None
    i = int((ctx.image_keep[:, 0] == 0).nonzero().flatten()[0])
    with torch.no_grad():
        alone = model(batch["input_ids"][i : i + 1], batch["attention_mask"][i : i + 1]).logits
    torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=0)


def test_trainable_float32_reset_head_and_adapter_state() -> None:
    model = build(
        MixedFusion, backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, dtype="bfloat16")
    )
    head = {n: p for n, p in model.named_parameters() if n.startswith("head.")}
    assert {n.split(".")[1] for n in head} >= {"text_attention", "image_attention", "classifier"}
    assert all(p.requires_grad and p.dtype == torch.float32 for p in head.values())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = model.adapter_state_dict()
    assert set(head) <= set(state)
    assert "head.text_attention.queries.weight" in state
    batch = make_batch(2, 6)
    ref = model(**batch).logits
    torch.manual_seed(123)
    rebuilt = MixedFusion(
        BackboneConfig(config=dict(TINY), num_text_layers=2, dtype="bfloat16"),
        VISION,
        num_cross_layers=2,
        pooling="label_attention",
        label_attention_size=16,
    ).eval()
    rebuilt.load_adapter_state_dict(state)
    torch.testing.assert_close(rebuilt(**batch).logits, ref, rtol=0, atol=0)
    # a checkpoint of the mean head does not load into a label-attention model
    mean = build(MixedFusion, pooling="mean")
    with pytest.raises(ValueError, match="head"):
        rebuilt.load_adapter_state_dict(mean.adapter_state_dict())
    model.reset_head(3)
    assert model.num_labels == 3
    out = model(**batch)
    assert out.logits.shape == (2, 3)
    assert out.text_attention is not None and out.text_attention.shape == (2, 3, 6)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "head." in n)


def test_bad_pooling_names_the_argument() -> None:
    with pytest.raises(ValueError, match="pooling"):
        build(pooling="max")
    with pytest.raises(ValueError, match="label_attention_size"):
        build(label_attention_size=0)


def test_a_training_step_reduces_the_loss() -> None:
    model = build(ParallelFusion, dropout=0.0, lora=LoraSettings(r=2, dropout=0.0)).train()
    batch = make_batch(6, 8, pad_from=5)
    labels = torch.randint(0, 2, (6, 14), generator=torch.Generator().manual_seed(0)).float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert model.head.text_attention.queries.weight.grad is not None  # type: ignore[union-attr]


def _keyword_reports(
    n: int, seed: int, keywords: tuple[int, ...], length: int = 12
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random "reports" of filler words 10..59; label c is 1 iff keyword c occurs (once)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 60, (n, length), generator=gen)
    labels = (torch.rand(n, len(keywords), generator=gen) < 0.5).float()
    for row in range(n):
        free = torch.randperm(length, generator=gen).tolist()
        for c, word in enumerate(keywords):
            if labels[row, c]:
                ids[row, free.pop()] = word
    return ids, torch.ones_like(ids), labels


def test_a_planted_keyword_gets_its_labels_attention() -> None:
    """A tiny model trained on texts where one word decides each label attends to that word."""
    keywords = (3, 4)
    torch.manual_seed(0)
    model = ParallelFusion(
        BackboneConfig(
            config=dict(
                vocab_size=64,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=32,
            ),
            num_text_layers=1,
        ),
        vision=VisionConfig(image_size=16, patch_size=8, num_layers=0),
        lora=None,
        num_labels=len(keywords),
        num_cross_layers=0,
        dropout=0.0,
        blocks_init="random",
        pooling="label_attention",
        label_attention_size=16,
    ).train()
    ids, mask, labels = _keyword_reports(256, 0, keywords)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        idx = torch.randperm(len(ids), generator=gen)[:32]
        logits = model(ids[idx], mask[idx]).logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_ids, test_mask, test_labels = _keyword_reports(64, 7, keywords)
    with torch.no_grad():
        out = model(test_ids, test_mask)
    assert out.text_attention is not None
    for c, word in enumerate(keywords):
        positive = test_labels[:, c] > 0
        predicted = out.logits[:, c] > 0
        assert (predicted == positive).float().mean() > 0.9
        on_word = (out.text_attention[:, c] * (test_ids == word)).sum(-1)
        # each positive text: most of the label's attention on its keyword (uniform: 1/12)
        assert float(on_word[positive].mean()) > 0.5, on_word[positive]
        top = out.text_attention[:, c].argmax(-1)
        assert bool((test_ids[positive, top[positive]] == word).float().mean() > 0.9)
