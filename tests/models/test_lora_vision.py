from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from medllama_fusion.models import VisionConfig, VisionEncoder
from medllama_fusion.tuners.lora import LoraSettings, inject_lora


def test_paper_budget() -> None:
    assert LoraSettings.paper_budget(8).target_modules == ["q_proj"]
    assert LoraSettings.paper_budget(4).target_modules == ["q_proj", "v_proj"]
    assert LoraSettings.paper_budget(2).target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    budgets = {r: r * len(LoraSettings.paper_budget(r).target_modules) for r in (2, 4, 8)}
    assert len(set(budgets.values())) == 1
    assert LoraSettings.paper_budget(4).lora_alpha == 8
    with pytest.raises(ValueError, match="r must be 2, 4 or 8"):
        LoraSettings.paper_budget(16)


def test_inject_lora_only_in_prefixes() -> None:
    model = nn.ModuleDict(
        {
            "a": nn.ModuleDict({"q_proj": nn.Linear(4, 4)}),
            "b": nn.ModuleDict({"q_proj": nn.Linear(4, 4)}),
        }
    )
    names = inject_lora(model, LoraSettings(r=2, target_modules=["q_proj"]), ["a"])
    assert names == ["a.q_proj"]
    assert hasattr(model["a"]["q_proj"], "lora_A") and not hasattr(model["b"]["q_proj"], "lora_A")
    with pytest.raises(ValueError, match="matched no module"):
        inject_lora(nn.ModuleDict({"c": nn.Linear(2, 2)}), LoraSettings(), ["c"])


@pytest.mark.parametrize("encoder", ["resnet18", "vit_b_16"])
def test_torchvision_encoder_weights(tmp_path: Path, encoder: str) -> None:
    size = 32
    kwargs = {"image_size": size} if encoder == "vit_b_16" else {}
    torch.manual_seed(0)
    net = getattr(torchvision.models, encoder)(weights=None, **kwargs)
    file = tmp_path / "w.pt"
    torch.save(net.state_dict(), file)
    cfg = VisionConfig(
        image_size=size,
        encoder=encoder,
        encoder_weights=str(file),
        num_layers=0,
        freeze_encoder=True,
    )
    enc = VisionEncoder(cfg, 64, [])
    tokens = enc.tokens(torch.randn(2, 1, size, size))
    assert tokens.shape == (2, enc.num_patches, 64)
    assert not any(p.requires_grad for p in enc.embed.encoder.parameters())
    first = next(iter(net.state_dict()))
    own = {k.replace("encoder.", "", 0): v for k, v in enc.embed.state_dict().items()}
    assert first in own or any(k.endswith(first) for k in own)
    bad = net.state_dict()
    bad.pop(first)
    torch.save(bad, file)
    with pytest.raises(ValueError, match=str(file).replace("\\", "\\\\")):
        VisionEncoder(cfg, 64, [])
    with pytest.raises(FileNotFoundError, match="encoder_weights"):
        VisionEncoder(
            VisionConfig(image_size=size, encoder=encoder, encoder_weights="/nope.pt"), 64, []
        )


def test_grayscale_and_rgb_patchify() -> None:
    for channels in (1, 3):
        enc = VisionEncoder(VisionConfig(image_size=16, patch_size=4, in_channels=channels), 32, [])
        assert enc.tokens(torch.randn(2, channels, 16, 16)).shape == (2, 16, 32)
    with pytest.raises(ValueError, match="channels"):
        enc.tokens(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_encoder_keeps_batchnorm_statistics(freeze: bool) -> None:
    from medllama_fusion.models import BackboneConfig, ParallelFusion
    from tests.models.conftest import TINY

    model = ParallelFusion(
        BackboneConfig(config=dict(TINY), num_text_layers=1),
        VisionConfig(image_size=32, encoder="resnet18", num_layers=0, freeze_encoder=freeze),
        num_cross_layers=1,
    ).train()
    encoder = model.vision.embed.encoder
    assert encoder.training is not freeze
    stats = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    model(pixel_values=torch.randn(4, 1, 32, 32) * 3 + 1).logits.sum().backward()
    changed = [k for k, v in stats.items() if not torch.equal(v, encoder.state_dict()[k])]
    assert (not changed) if freeze else changed
    model.eval()
    model.train()
    assert encoder.training is not freeze
