"""Pipeline inputs, errors and export on an untrained tiny model (fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.demo import build_demo_tokenizer
from medllama_fusion.errors import InputError
from medllama_fusion.inference.pipeline import FusionPipeline
from medllama_fusion.models import BackboneConfig, SerialFusion, VisionConfig
from medllama_fusion.tuners.lora import LoraSettings

LABELS = ["Cardiomegaly", "Pleural-Effusion", "Edema"]
REPORTS = ["The heart is enlarged.", "No pleural effusion. Lungs are clear."]


@pytest.fixture(scope="module")
def pipe() -> FusionPipeline:
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
    )
    with torch.no_grad():  # non-zero LoRA B so that merging changes the base weights
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    record = Preprocessing(max_length=16, image_size=16).complete(label_names=LABELS)
    return FusionPipeline(model.train(), record.with_tokenizer(tokenizer))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    array = (np.arange(20 * 20).reshape(20, 20) % 251).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(array).save(path)
    return path


def test_eval_mode_and_image_forms_agree(pipe: FusionPipeline, image_file: Path) -> None:
    assert not pipe.model.training
    array = np.asarray(Image.open(image_file))
    reference = pipe(image=image_file, report=REPORTS[0])
    assert isinstance(reference, dict) and list(reference) == LABELS
    forms = [
        str(image_file),
        Image.open(image_file),
        array,
        torch.from_numpy(array.copy())[None],
        np.stack([array] * 3, axis=-1),
    ]
    for form in forms:  # every form of the same 8-bit picture: the same numbers
        assert pipe(image=form, report=REPORTS[0]) == pytest.approx(reference, abs=1e-6)
    # floats are resized as floats (no rounding to 8 bit after the resize): nearly the same
    as_float = pipe(image=array.astype(np.float32) / 255, report=REPORTS[0])
    assert as_float == pytest.approx(reference, abs=5e-3)
    batch = pipe(image=[image_file, image_file], report=REPORTS)
    assert isinstance(batch, list) and batch[0] == pytest.approx(reference, abs=1e-5)
    assert isinstance(pipe(report=REPORTS[1]), dict) and isinstance(pipe(image=array), dict)


def test_clear_errors(pipe: FusionPipeline, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="1 images but 2 reports"):
        pipe(image=[np.zeros((16, 16))], report=REPORTS)
    with pytest.raises(InputError, match=r"pass image=\.\.\., report="):
        pipe()
    with pytest.raises(InputError, match="shape"):
        pipe(image=np.zeros((2, 3, 16, 16)))
    with pytest.raises(InputError, match="does not exist"):
        FusionPipeline.from_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        FusionPipeline.from_checkpoint(tmp_path / "broken.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "run.ckpt")
    with pytest.raises(InputError, match=r"run\.ckpt carries no preprocessing record"):
        FusionPipeline.from_checkpoint(tmp_path / "run.ckpt")
    with pytest.raises(InputError, match="thresholds"):
        pipe.decide({"Edema": 0.3})


def test_export_round_trip(pipe: FusionPipeline, image_file: Path, tmp_path: Path) -> None:
    from peft.tuners.lora import LoraLayer

    batch = pipe.make_batch([image_file, image_file], REPORTS)
    before = pipe.logits(batch)
    pipe.thresholds = {"Cardiomegaly": 0.4, "Pleural-Effusion": 0.6, "Edema": 0.5}
    pipe.save_pretrained(tmp_path / "model")
    loaded = FusionPipeline.from_pretrained(tmp_path / "model")
    assert not any(isinstance(m, LoraLayer) for m in loaded.model.modules())
    assert loaded.thresholds == pipe.thresholds and loaded.label_names == LABELS
    after = loaded.logits(loaded.make_batch([image_file, image_file], REPORTS))
    assert torch.allclose(after, before, atol=1e-5)
    with pytest.raises(InputError, match="not a medllama-fusion export"):
        FusionPipeline.from_pretrained(tmp_path)


def test_image_preprocessing_equals_the_data_modules(pipe: FusionPipeline, tmp_path: Path) -> None:
    from medllama_fusion.data.dataset import FusionDataset
    from medllama_fusion.data.images import build_image_transform
    from medllama_fusion.datasets.base import FusionSample

    path = tmp_path / "film.jpg"  # a JPEG larger than the target: draft decoding + resize
    ramp = np.add.outer(np.arange(90), np.arange(70)).astype(np.uint8)
    Image.fromarray(ramp).convert("RGB").save(path, quality=90)
    dataset = FusionDataset(
        [FusionSample("a", path, "")],
        [],
        build_image_transform(16, train=False),
        modalities=["image"],
        image_size=(16, 16),
    )
    assert torch.equal(pipe.preprocessing.image(path), dataset[0]["pixel_values"])
