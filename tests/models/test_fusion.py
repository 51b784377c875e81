from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.models import (
    BackboneConfig,
    FusionModel,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
    VisionConfig,
)
from medllama_fusion.tuners.lora import LoraSettings
from tests.models.conftest import TINY, make_batch

VARIANTS = [ParallelFusion, SerialFusion, MixedFusion]
VISION = VisionConfig(image_size=32, patch_size=8, num_layers=2)


def build(cls: type[FusionModel] = ParallelFusion, **kwargs: Any) -> FusionModel:
    backbone = kwargs.pop("backbone", BackboneConfig(config=dict(TINY), num_text_layers=2))
    kwargs.setdefault("vision", VISION)
    kwargs.setdefault("num_cross_layers", 2)
    kwargs.setdefault("num_labels", 14)
    torch.manual_seed(0)
    model = cls(backbone, **kwargs)
    return model.eval()


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize(("batch", "length"), [(1, 5), (3, 9), (4, 17)])
def test_output_shapes(cls: type[FusionModel], batch: int, length: int) -> None:
    model = build(cls)
    out = model(**make_batch(batch, length))
    assert out.logits.shape == (batch, 14)
    assert out.text_features is not None and out.text_features.shape == (batch, 64)
    assert out.image_features is not None and out.image_features.shape == (batch, 64)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_invariance(cls: type[FusionModel], causal: bool) -> None:
    model = build(cls, backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, causal=causal))
    batch = make_batch(3, 6)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    mask = mask.clone()
    mask[1, 4:] = 0
    with torch.no_grad():
        ref = model(ids, mask, pixels).logits
        ids2 = ids.clone()
        ids2[1, 4:] = 7  # different pad token ids
        assert torch.allclose(model(ids2, mask, pixels).logits, ref, atol=1e-5)
        # longer padding
        pad = torch.zeros(3, 5, dtype=torch.long)
        ids3 = torch.cat([ids, pad + 3], dim=1)
        mask3 = torch.cat([mask, pad], dim=1)
        assert torch.allclose(model(ids3, mask3, pixels).logits, ref, atol=1e-5)
        # sample alone (no batch neighbours) gives the same logits
        single = model(ids[1:2, :4], mask[1:2, :4], pixels[1:2]).logits
        assert torch.allclose(single, ref[1:2], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_text_attention_direction(causal: bool) -> None:
    model = build(
        SerialFusion, backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, causal=causal)
    )
    batch = make_batch(2, 6)
    ids = batch["input_ids"]
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 512
    states = []
    with torch.no_grad():
        for x in (ids, changed):
            ctx = model.prepare(x, batch["attention_mask"], None)
            states.append(model.encode_text(model.embed_text(x, ctx), ctx))
    first_token_changed = not torch.allclose(states[0][:, 0], states[1][:, 0])
    assert first_token_changed is (not causal)


def _trainable(model: FusionModel) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("cls", VARIANTS)
def test_exactly_intended_parameters_train(cls: type[FusionModel]) -> None:
    model = build(cls, lora=LoraSettings(r=2, target_modules=["q_proj", "v_proj"]))
    trainable = _trainable(model)
    new = {n for n in trainable if ".lora_" not in n}
    expected_new = {
        "vision.embed.proj.weight",
        "vision.embed.proj.bias",
        "vision.embed.position_embedding",
        "text_norm.weight",
        "image_norm.weight",
        "head.text_proj.weight",
        "head.text_proj.bias",
        "head.image_proj.weight",
        "head.image_proj.bias",
        "head.classifier.weight",
        "head.classifier.bias",
    }
    for group in ("early_cross", "late_cross"):
        for i, _ in enumerate(getattr(model, group)):
            for d in ("text_to_image", "image_to_text"):
                expected_new.add(f"{group}.{i}.{d}.context_layernorm.weight")
    assert new == expected_new
    lora = {n for n in trainable if ".lora_" in n}
    # every q/v projection of every backbone-derived block has lora_A and lora_B
    n_blocks = 2 + 2 + 2 * (len(model.early_cross) + len(model.late_cross))
    assert len(lora) == n_blocks * 2 * 2
    assert all(".q_proj." in n or ".v_proj." in n for n in lora)
    for name, param in model.named_parameters():
        if "backbone." in name and ".lora_" not in name:
            assert not param.requires_grad, name
    report = model.trainable_parameter_report()
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report["groups"]["backbone"]["trainable"] == 0
    assert report["groups"]["lora"]["trainable"] == report["groups"]["lora"]["total"] > 0
    print(cls.__name__, "trainable", report["trainable"], "of", report["total"])


def test_random_blocks_train_in_full_without_lora() -> None:
    model = build(MixedFusion, blocks_init="random")
    trainable = _trainable(model)
    assert not any(".lora_" in n and not n.startswith("backbone.") for n in trainable)
    assert "vision.stack.layers.0.self_attn.q_proj.weight" in trainable
    assert "early_cross.0.text_to_image.cross_attn.q_proj.weight" in trainable
    assert any(
        n.startswith("backbone.text_stack.layers.0.self_attn.q_proj.lora_A") for n in trainable
    )


def test_blocks_from_backbone_are_pretrained_layers() -> None:
    model = build(SerialFusion, lora=None)
    # A random base builds only the layers it keeps (6 here: 2 text + 2 vision + 2 cross), so
    # the reference keeps the same number to get the same seeded layers.
    ref = BackboneConfig(config=dict(TINY), num_text_layers=6)
    from medllama_fusion.models import LlamaBackbone

    full = LlamaBackbone(ref)
    # vision layers = backbone layers 2, 3; late cross = 4, 5 (both directions)
    torch.testing.assert_close(
        model.vision.stack.layers[0].self_attn.q_proj.weight, full.layers[2].self_attn.q_proj.weight
    )
    torch.testing.assert_close(
        model.late_cross[1].image_to_text.cross_attn.k_proj.weight,
        full.layers[5].self_attn.k_proj.weight,
    )
    torch.testing.assert_close(
        model.late_cross[1].text_to_image.mlp.down_proj.weight, full.layers[5].mlp.down_proj.weight
    )


@pytest.mark.parametrize("cls", VARIANTS)
def test_missing_modality(cls: type[FusionModel]) -> None:
    model = build(cls)
    batch = make_batch(2, 6)
    text_only = model(batch["input_ids"], batch["attention_mask"], None)
    image_only = model(None, None, batch["pixel_values"])
    assert text_only.logits.shape == image_only.logits.shape == (2, 14)
    assert text_only.image_features is None and image_only.text_features is None
    with pytest.raises(ValueError, match="input_ids or pixel_values"):
        model()


def test_modality_dropout_trains() -> None:
    model = build(MixedFusion, modality_dropout=0.5, dropout=0.0)
    model.train()
    batch = make_batch(8, 6)
    torch.manual_seed(1)
    out = model(**batch).logits
    out.sum().backward()
    assert torch.isfinite(out).all()
    model.eval()
    a = model(**batch).logits
    b = model(**batch).logits
    assert torch.equal(a, b)  # no dropout in eval


def test_adapter_state_dict_round_trip() -> None:
    model = build(MixedFusion)
    # perturb trainable tensors so the round trip is not trivially equal to a fresh init
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = model.adapter_state_dict()
    assert not any(k.startswith("backbone.embed_tokens") for k in state)
    assert not any(".base_layer." in k for k in state)
    assert "backbone.text_stack.layers.0.input_layernorm.weight" not in state
    assert any(".lora_B." in k for k in state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(state)
    # its LoRA part is exactly what PEFT's own helper returns
    from peft import get_peft_model_state_dict

    peft_state = get_peft_model_state_dict(model)
    lora = {k.replace(".default.", "."): v for k, v in state.items() if ".lora_" in k}
    assert lora.keys() == peft_state.keys()
    assert all(torch.equal(v, peft_state[k]) for k, v in lora.items())
    batch = make_batch(2, 6)
    ref = model(**batch).logits
    torch.manual_seed(123)  # different global RNG: new modules differ before loading
    rebuilt = MixedFusion(
        BackboneConfig(config=dict(TINY), num_text_layers=2), VISION, num_cross_layers=2
    ).eval()
    assert not torch.allclose(rebuilt(**batch).logits, ref)
    rebuilt.load_adapter_state_dict(state)
    torch.testing.assert_close(rebuilt(**batch).logits, ref, rtol=0, atol=0)
    broken = dict(state)
    broken.pop("head.classifier.weight")
    broken["head.classifier.bias"] = torch.zeros(3)
    broken["nope"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"head\.classifier\.weight") as err:
        rebuilt.load_adapter_state_dict(broken)
    assert "nope" in str(err.value) and "head.classifier.bias" in str(err.value)


def _backbone_derived(key: str, blocks_init: str) -> bool:
    """Whether a state-dict key is a frozen backbone tensor, by the documented layout."""
    if ".lora_" in key or ".context_layernorm." in key:
        return False
    derived = ("backbone.embed_tokens.", "backbone.text_stack.layers.")
    if blocks_init == "backbone":
        derived += ("vision.stack.layers.", "early_cross.", "late_cross.")
    return key.startswith(derived)


@pytest.mark.parametrize("blocks_init", ["backbone", "random"])
@pytest.mark.parametrize("lora", [None, LoraSettings(r=2, target_modules=["q_proj", "gate_proj"])])
@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_adapter_state_is_state_dict_minus_backbone_frozen_tensors(
    blocks_init: str, lora: LoraSettings | None, quantization: str | None
) -> None:
    model = build(
        MixedFusion,
        backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, quantization=quantization),
        lora=lora,
        blocks_init=blocks_init,
    )
    full = set(model.state_dict())
    frozen_keys = {k for k in full if _backbone_derived(k, blocks_init)}
    assert frozen_keys and frozen_keys != full
    assert model.frozen_state_keys() == frozen_keys
    assert set(model.adapter_state_dict()) == full - frozen_keys
    # the keys follow from the backbone's set of frozen modules: each key belongs to the
    # module with the longest name prefixing it
    modules = dict(model.named_modules(remove_duplicate=False))

    def owner(key: str) -> torch.nn.Module:
        parts = key.split(".")
        return next(
            modules[".".join(parts[:i])]
            for i in range(len(parts) - 1, 0, -1)
            if ".".join(parts[:i]) in modules
        )

    frozen = model.backbone.frozen_modules
    assert {k for k in full if owner(k) in frozen} == frozen_keys
    names = model.frozen_module_names()
    assert all(modules[n] in frozen for n in names)
    if lora is not None:
        assert "backbone.text_stack.layers.0.self_attn.q_proj.base_layer" in names
        assert "backbone.text_stack.layers.0.self_attn.q_proj" not in names
    # exactly the parameters of frozen modules are frozen
    for name, param in model.named_parameters():
        assert param.requires_grad == (owner(name) not in frozen), name
    # no hidden marker on any module
    assert not any(hasattr(m, "_medllama_base") for m in [*model.modules(), *frozen])


def test_reset_head() -> None:
    model = build(ParallelFusion)
    model.reset_head(3)
    assert model.num_labels == 3
    assert model(**make_batch(2, 5)).logits.shape == (2, 3)


def test_gradient_checkpointing_matches() -> None:
    batch = make_batch(2, 6)
    grads = []
    for ckpt in (False, True):
        model = build(
            MixedFusion,
            backbone=BackboneConfig(
                config=dict(TINY), num_text_layers=2, gradient_checkpointing=ckpt
            ),
            dropout=0.0,
            lora=LoraSettings(dropout=0.0),
        ).train()
        model.head.classifier.weight.data.fill_(0.1)
        model(**batch).logits.sum().backward()
        grads.append(model.text_norm.weight.grad.clone())  # type: ignore[union-attr]
    torch.testing.assert_close(grads[0], grads[1])


def _load_example() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "custom_fusion.py"
    spec = importlib.util.spec_from_file_location("custom_fusion", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_fusion_example_trains_one_step() -> None:
    gated_cls = _load_example().GatedFusion
    model = build(gated_cls, num_labels=4).train()
    assert {"text_gate", "image_gate"} <= _trainable(model)
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = make_batch(4, 6)
    labels = torch.randint(0, 2, (4, 4)).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch).logits, labels)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, params[n])
    ]
    assert "text_gate" in changed and "head.classifier.weight" in changed
    assert any(".lora_B." in n for n in changed)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name


def test_compiled_forward_matches() -> None:
    model = build(ParallelFusion)
    batch = make_batch(2, 6)
    compiled = torch.compile(model, fullgraph=False, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch).logits, model(**batch).logits)


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="num_attention_heads"):
        BackboneConfig(config=dict(TINY, hidden_size=66))
    with pytest.raises(ValueError, match="patch_size"):
        VisionConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="num_text_layers"):
        build(ParallelFusion, backbone=BackboneConfig(config=dict(TINY), num_text_layers=13))
    with pytest.raises(ValueError, match="num_cross_layers"):
        build(MixedFusion, num_cross_layers=5)
    with pytest.raises(ValueError, match=r"target_modules.*qq_proj"):
        LoraSettings(target_modules=["q_proj", "qq_proj"])
    with pytest.raises(ValueError, match="blocks_init"):
        build(ParallelFusion, blocks_init="pretrained")
    with pytest.raises(ValueError, match="dtype"):
        BackboneConfig(config=dict(TINY), dtype="float64")
    model = build(ParallelFusion)
    with pytest.raises(ValueError, match="image_size"):
        model(None, None, torch.zeros(1, 1, 16, 16))


def test_bfloat16_forward_backward() -> None:
    model = build(
        SerialFusion,
        backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, dtype="bfloat16"),
    ).train()
    out = model(**make_batch(2, 6)).logits
    assert out.dtype == torch.float32  # the float32 head returns float32 logits
    out.sum().backward()
    assert model.head.classifier.weight.grad is not None


@pytest.mark.parametrize("cls", VARIANTS)
def test_absent_modality_per_sample_equals_single_modality_forward(
    cls: type[FusionModel],
) -> None:
    model = build(cls)
    batch = make_batch(3, 6, pad_from=4)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    image_present = torch.tensor([True, False, True])
    text_present = torch.tensor([True, True, False])
    with torch.no_grad():
        out = model(ids, mask, pixels, text_present, image_present).logits
        text_only = model(ids[1:2], mask[1:2], None).logits
        image_only = model(None, None, pixels[2:3]).logits
        both = model(ids[0:1], mask[0:1], pixels[0:1]).logits
        torch.testing.assert_close(out[1:2], text_only, atol=1e-5, rtol=0)
        torch.testing.assert_close(out[2:3], image_only, atol=1e-5, rtol=0)
        torch.testing.assert_close(out[0:1], both, atol=1e-5, rtol=0)
        # whatever the absent modality holds, the sample's logits do not change
        pixels2, ids2 = pixels.clone(), ids.clone()
        pixels2[1] = 100.0
        ids2[2] = 5
        again = model(ids2, mask, pixels2, text_present, image_present).logits
        torch.testing.assert_close(again, out, atol=1e-5, rtol=0)
        # all-True presence is the same as no presence flags
        ones = torch.ones(3, dtype=torch.bool)
        torch.testing.assert_close(
            model(ids, mask, pixels, ones, ones).logits, model(ids, mask, pixels).logits
        )
    with pytest.raises(ValueError, match="image_present"):
        model(ids, mask, pixels, None, torch.ones(2, dtype=torch.bool))


def test_modality_dropout_is_a_missing_modality() -> None:
    model = build(ParallelFusion, modality_dropout=0.9, dropout=0.0, lora=LoraSettings(dropout=0.0))
    model.train()
    batch = make_batch(16, 6)
    torch.manual_seed(3)
    with torch.no_grad():
        ctx = model.prepare(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        torch.manual_seed(3)
        out = model(**batch).logits
    assert ctx.text_keep is not None and ctx.image_keep is not None
    dropped_image = (ctx.image_keep[:, 0] == 0).nonzero().flatten()
    assert len(dropped_image) > 0
    i = int(dropped_image[0])
    with torch.no_grad():
        alone = model(batch["input_ids"][i : i + 1], batch["attention_mask"][i : i + 1]).logits
    torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=0)
    # a sample that has only one modality is never dropped to nothing
    with torch.no_grad():
        ctx = model.prepare(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            None,
            torch.zeros(16, dtype=torch.bool),
        )
    assert ctx.text_keep is not None and bool((ctx.text_keep == 1).all())


@pytest.mark.parametrize(
    ("cls", "blocks_init", "dtype"),
    [
        (MixedFusion, "backbone", "bfloat16"),
        (ParallelFusion, "random", "bfloat16"),
        (SerialFusion, "backbone", "float16"),
    ],
)
def test_trainable_tensors_are_float32_and_move_at_lr_1e_4(
    cls: type[FusionModel], blocks_init: str, dtype: str
) -> None:
    model = build(
        cls,
        backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, dtype=dtype),
        blocks_init=blocks_init,
        dropout=0.0,
        lora=LoraSettings(r=2, dropout=0.0, target_modules=["q_proj", "v_proj", "gate_proj"]),
    ).train()
    low = getattr(torch, dtype)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values()), {
        n: p.dtype for n, p in trainable.items() if p.dtype != torch.float32
    }
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == low for p in frozen)
    with torch.no_grad():  # lora_B starts at 0, which would leave lora_A without a gradient
        for name, param in trainable.items():
            if ".lora_B." in name:
                param.normal_(std=0.02)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(list(trainable.values()), lr=1e-4, weight_decay=0.0)
    batch = make_batch(3, 6, pad_from=4)
    labels = torch.randint(0, 2, (3, 14), generator=torch.Generator().manual_seed(0)).float()
    logits = model(**batch).logits  # bf16/fp16 base, no autocast
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    loss.backward()
    opt.step()
    unchanged = [n for n, p in trainable.items() if torch.equal(p, before[n])]
    assert not unchanged
    assert all(p.dtype == low for p in frozen)
    # the same model also runs under bf16 autocast (Lightning's bf16-mixed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch).logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_cross_directions_share_frozen_weights_not_adapters(quantization: str | None) -> None:
    model = build(
        MixedFusion,
        backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, quantization=quantization),
        lora=LoraSettings(r=2, target_modules=["q_proj", "gate_proj"]),
    )
    for layer in [*model.early_cross, *model.late_cross]:
        t2i, i2t = layer.text_to_image, layer.image_to_text
        for a, b in [
            (t2i.cross_attn.q_proj.base_layer.weight, i2t.cross_attn.q_proj.base_layer.weight),
            (t2i.cross_attn.k_proj.weight, i2t.cross_attn.k_proj.weight),
            (t2i.mlp.gate_proj.base_layer.weight, i2t.mlp.gate_proj.base_layer.weight),
            (t2i.mlp.down_proj.weight, i2t.mlp.down_proj.weight),
            (t2i.input_layernorm.weight, i2t.input_layernorm.weight),
        ]:
            assert a is b and a.data_ptr() == b.data_ptr()
        assert t2i.cross_attn.q_proj is not i2t.cross_attn.q_proj
        for name in ("lora_A", "lora_B"):
            wa = getattr(t2i.cross_attn.q_proj, name)["default"].weight
            wb = getattr(i2t.cross_attn.q_proj, name)["default"].weight
            assert wa is not wb and wa.data_ptr() != wb.data_ptr()
        assert not torch.equal(
            t2i.mlp.gate_proj.lora_A["default"].weight, i2t.mlp.gate_proj.lora_A["default"].weight
        )
        assert t2i.context_layernorm.weight is not i2t.context_layernorm.weight
    # each shared frozen tensor is stored once: one decoder layer per cross layer
    unique = {id(p) for p in model.parameters()}
    every = list(model.named_parameters(remove_duplicate=False))
    shared = len(every) - len(unique)
    # 9 tensors per decoder layer: q, k, v, o, gate, up, down and the two norms
    assert shared == 9 * (len(model.early_cross) + len(model.late_cross))
    # adapters of both directions round-trip through an adapter checkpoint
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = model.adapter_state_dict()
    key = "early_cross.0.{}.cross_attn.q_proj.lora_B.default.weight"
    assert key.format("text_to_image") in state and key.format("image_to_text") in state
    batch = make_batch(2, 6)
    with torch.no_grad():
        ref = model(**batch).logits
    rebuilt = build(
        MixedFusion,
        backbone=BackboneConfig(config=dict(TINY), num_text_layers=2, quantization=quantization),
        lora=LoraSettings(r=2, target_modules=["q_proj", "gate_proj"]),
    )
    rebuilt.load_adapter_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**batch).logits, ref, rtol=0, atol=0)
    for k, v in rebuilt.adapter_state_dict().items():
        assert torch.equal(v, state[k]), k
    if quantization is None:  # moving the model (as .to(device) does) keeps the sharing
        rebuilt.to(torch.float64)
        layer = rebuilt.early_cross[0]
        assert layer.text_to_image.mlp.up_proj.weight is layer.image_to_text.mlp.up_proj.weight
        assert layer.text_to_image.mlp.up_proj.weight.dtype == torch.float64
