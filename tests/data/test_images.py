from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from torchvision.transforms import v2

from medllama_fusion.data.images import (
    build_image_transform,
    is_dicom,
    load_image,
    read_image,
    verify_image,
)
from tests.assets import asset_path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 8, width: int = 16, high: int = 255) -> np.ndarray:
    return np.tile(np.linspace(0, high, width), (height, 1)).round()


def test_png_8bit(tmp_path: Path) -> None:
    pixels = ramp().astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    array = read_image(tmp_path / "a.png")
    assert array.dtype == np.float32 and array.shape == (8, 16)
    np.testing.assert_allclose(array, pixels / 255.0, atol=1e-6)


def test_png_16bit_keeps_full_range(tmp_path: Path) -> None:
    pixels = ramp(high=4000).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as image:
        assert image.mode.startswith("I")
    array = read_image(tmp_path / "a16.png")
    np.testing.assert_allclose(array, pixels / 65535.0, atol=1e-6)
    # more distinct grey levels than 8 bit could hold between two close values
    assert len(np.unique(array)) == len(np.unique(pixels))


def test_jpeg_and_rgb(tmp_path: Path) -> None:
    pixels = ramp(32, 32).astype(np.uint8)
    Image.fromarray(pixels, mode="L").convert("RGB").save(tmp_path / "a.jpg", quality=95)
    array = read_image(tmp_path / "a.jpg")
    assert array.shape == (32, 32)
    assert np.abs(array - pixels / 255.0).mean() < 0.02


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = ramp(high=4095)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2"))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
    assert mono2[0, 0] == pytest.approx(0.0) and mono2[0, -1] == pytest.approx(1.0)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_dicom_rescale_and_window(tmp_path: Path) -> None:
    pixels = ramp(high=1000)
    path = write_dicom(
        tmp_path / "w.dcm", pixels, slope=2.0, intercept=-1000.0, window=(0.0, 400.0)
    )
    array = read_image(path)
    # values -1000..1000 windowed at 0 +- 200: everything below -200 black, above 200 white
    rescaled = pixels * 2.0 - 1000.0
    assert np.all(array[rescaled < -250] == pytest.approx(0.0))
    assert np.all(array[rescaled > 250] == pytest.approx(1.0))
    middle = (rescaled > -150) & (rescaled < 150)
    assert middle.any() and np.all((array[middle] > 0.0) & (array[middle] < 1.0))


def test_dicom_detected_without_suffix(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "noext", ramp(high=4095))
    assert is_dicom(path)
    assert read_image(path).shape == (8, 16)


@pytest.mark.real_assets
def test_real_radiograph_rg1_unci() -> None:
    path = asset_path("data_store", "data/RG1_UNCI.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    assert verify_image(path) is None
    tensor = load_image(path, build_image_transform(224))
    assert tensor.shape == (1, 224, 224) and tensor.dtype == torch.float32
    assert torch.isfinite(tensor).all()
    assert -1.0 <= tensor.min() < tensor.max() <= 1.0
    raw = load_image(path)
    assert raw.shape[0] == 1 and raw.min() >= 0.0 and raw.max() <= 1.0 and raw.std() > 0.1
    # after MONOCHROME1 inversion the (air-filled) lungs are darker than the mediastinum
    h, w = raw.shape[1:]
    lungs = torch.cat(
        [raw[0, h // 3 : h // 2, w // 5 : w // 3], raw[0, h // 3 : h // 2, -w // 3 : -w // 5]]
    )
    mediastinum = raw[0, h // 3 : h // 2, w // 2 - w // 20 : w // 2 + w // 20]
    assert lungs.mean() < mediastinum.mean()


def test_transform_shapes_and_normalisation(tmp_path: Path) -> None:
    Image.fromarray(np.full((40, 30), 255, np.uint8), mode="L").save(tmp_path / "w.png")
    tensor = load_image(tmp_path / "w.png", build_image_transform((24, 20), mean=0.5, std=0.25))
    assert tensor.shape == (1, 24, 20)
    assert torch.allclose(tensor, torch.full_like(tensor, 2.0))


def test_train_augmentation_light_and_without_flip() -> None:
    eval_tf = build_image_transform(32, train=False)
    train_tf = build_image_transform(32, train=True)
    kinds = [type(t) for t in train_tf.transforms]  # type: ignore[attr-defined]
    assert v2.RandomHorizontalFlip not in kinds and v2.RandomAffine in kinds
    assert v2.RandomHorizontalFlip in [
        type(t)
        for t in build_image_transform(32, train=True, horizontal_flip=True).transforms  # type: ignore[attr-defined]
    ]
    image = torch.rand(1, 48, 48)
    assert torch.equal(eval_tf(image), eval_tf(image))
    torch.manual_seed(0)
    augmented = train_tf(image)
    assert augmented.shape == (1, 32, 32)
    assert not torch.equal(augmented, eval_tf(image))
    with pytest.raises(ValueError, match="image_size"):
        build_image_transform(0)


def test_verify_image_reports_missing_and_corrupt(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(good)
    assert verify_image(good) is None
    assert verify_image(tmp_path / "nope.png") == "file not found"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    assert "unreadable" in str(verify_image(bad))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:30])
    assert verify_image(truncated) is not None
    bad_dcm = tmp_path / "bad.dcm"
    bad_dcm.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    assert verify_image(bad_dcm) is not None
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")
