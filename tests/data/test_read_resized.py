"""Decoding straight to the training size, in the file's own integer type, one open per file."""

from __future__ import annotations

import builtins
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from medllama_fusion.data.images import (
    build_image_transform,
    load_image,
    read_image,
    read_resized,
    to_unit_float,
)
from tests.assets import asset_path
from tests.data.test_images import ramp, write_dicom


def film(height: int = 300, width: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth 8-bit film-like image with noise (lungs dark, mediastinum bright)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    body = 160 - 70 * np.exp(
        -(((x - width * 0.3) / (width * 0.15)) ** 2 + ((y - height / 2) / (height * 0.3)) ** 2)
    )
    body -= 70 * np.exp(
        -(((x - width * 0.7) / (width * 0.15)) ** 2 + ((y - height / 2) / (height * 0.3)) ** 2)
    )
    return np.clip(body + rng.normal(0, 5, (height, width)), 0, 255).astype(np.uint8)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every file name opened through ``open`` (Pillow, pathlib and numpy use it)."""
    names: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        names.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    yield names


def test_png_8bit_stays_uint8_and_matches_the_float_pipeline(tmp_path: Path) -> None:
    pixels = film()
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    resized = read_resized(tmp_path / "a.png", 64)
    assert resized.dtype == torch.uint8 and resized.shape == (1, 64, 64)
    # the previous pipeline: full-size float32, then torchvision's antialiased resize
    reference = F.resize(torch.from_numpy(pixels / 255.0).float()[None], [64, 64], antialias=True)
    assert (to_unit_float(resized) - reference).abs().max() <= 1.5 / 255


def test_png_16bit_keeps_its_range(tmp_path: Path) -> None:
    pixels = ramp(40, 80, high=4000).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a16.png")
    resized = read_resized(tmp_path / "a16.png", (20, 40))
    assert resized.dtype == torch.uint16 and resized.shape == (1, 20, 40)
    unit = to_unit_float(resized)
    reference = F.resize(torch.from_numpy(pixels / 65535.0).float()[None], [20, 40], antialias=True)
    assert (unit - reference).abs().max() <= 1.5 / 65535
    assert len(torch.unique(unit)) > 30  # not squashed to a few 8-bit levels


def test_jpeg_decoded_at_reduced_scale_is_close(tmp_path: Path) -> None:
    pixels = film(800, 640)
    Image.fromarray(pixels, mode="L").convert("RGB").save(tmp_path / "a.jpg", quality=95)
    resized = read_resized(tmp_path / "a.jpg", 64)
    assert resized.dtype == torch.uint8 and resized.shape == (1, 64, 64)
    full = F.resize(
        torch.from_numpy(read_image(tmp_path / "a.jpg"))[None], [64, 64], antialias=True
    )
    assert (to_unit_float(resized) - full).abs().mean() < 0.01


def test_png_is_opened_once(tmp_path: Path, opened: list[str]) -> None:
    Image.fromarray(film(), mode="L").save(tmp_path / "a.png")
    opened.clear()
    read_resized(tmp_path / "a.png", 32)
    assert sum(name.endswith("a.png") for name in opened) == 1


def test_dicom_found_by_suffix_and_by_preamble(tmp_path: Path) -> None:
    with_suffix = write_dicom(tmp_path / "m.dcm", ramp(64, 64, high=4095))
    without = tmp_path / "m"
    shutil.copy(with_suffix, without)
    misnamed = tmp_path / "m.png"  # a DICOM someone saved with a .png name
    shutil.copy(with_suffix, misnamed)
    first = read_resized(with_suffix, 16)
    assert first.dtype == torch.float32 and first.shape == (1, 16, 16)
    assert torch.equal(first, read_resized(without, 16))
    assert torch.equal(first, read_resized(misnamed, 16))


def test_unreadable_file_still_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all, and no DICOM preamble either" * 4)
    with pytest.raises(Exception, match="cannot identify"):
        read_resized(bad, 16)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_resized(tmp_path / "nope.png", 16)


@pytest.mark.real_assets
def test_real_dicom_resized_matches_full_decode() -> None:
    path = asset_path("data_store", "data/RG1_UNCI.dcm")
    resized = read_resized(path, 128)
    assert resized.dtype == torch.float32 and resized.shape == (1, 128, 128)
    full = F.resize(torch.from_numpy(read_image(path))[None], [128, 128], antialias=True)
    assert torch.allclose(resized, full)


def test_load_image_with_size_equals_transform_of_full_image(tmp_path: Path) -> None:
    pixels = film()
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    transform = build_image_transform(48)
    direct = load_image(tmp_path / "a.png", transform, size=48)
    full = load_image(tmp_path / "a.png", transform)
    assert direct.shape == full.shape == (1, 48, 48)
    assert (direct - full).abs().max() <= 3.0 / 255 / 0.5  # normalised by std 0.5


def test_transform_takes_resized_images_of_every_type() -> None:
    image = torch.from_numpy(film(64, 64))[None]
    evaluation = build_image_transform(64, train=False)
    assert type(evaluation(image)) is torch.Tensor
    assert torch.equal(evaluation(image), evaluation(to_unit_float(image)))
    train = build_image_transform(64, train=True)
    prepare = train.transforms[0]  # type: ignore[attr-defined]
    assert isinstance(prepare(image), Image.Image)  # augmented with Pillow's kernels
    torch.manual_seed(3)
    first = train(image)
    torch.manual_seed(3)
    again = train(image)
    assert type(first) is torch.Tensor and first.dtype == torch.float32
    assert first.shape == (1, 64, 64)
    assert torch.equal(first, again) and not torch.equal(first, evaluation(image))
    sixteen = image.to(torch.int32).mul(257).to(torch.uint16)
    assert torch.allclose(evaluation(sixteen), evaluation(image))
    assert train(sixteen).dtype == torch.float32  # uint16 is augmented as float
