"""Reading chest radiographs (PNG 8/16-bit, JPEG, DICOM) and torchvision v2 image transforms.

Every reader returns a 2-D ``float32`` array scaled to ``[0, 1]`` where *bright = dense*
(bone white, air black), whatever the file format:

- PNG/JPEG/TIFF via Pillow; 16-bit PNGs keep their full range (divided by the bit depth's
  maximum, not squashed to 8 bit); colour images are converted to luminance.
- DICOM via pydicom: the modality LUT (Rescale Slope/Intercept) is applied, then the VOI LUT or
  window (Window Center/Width) when the file has one, and ``MONOCHROME1`` images are inverted so
  that they look like ``MONOCHROME2``; the result is min-max scaled to ``[0, 1]``.

The transforms (:func:`build_image_transform`) turn that array into a normalised
``FloatTensor [1, H, W]``. Training-time augmentation is deliberately light (small affine /
rotation, brightness/contrast jitter) and has **no horizontal flip by default**: a flipped chest
film moves the heart to the right (dextrocardia) and swaps the side of left/right findings, which
changes the meaning of labels such as cardiomegaly and of laterality words in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")


def is_dicom(path: str | Path) -> bool:
    """Tell whether ``path`` is a DICOM file (by suffix, else by the ``DICM`` preamble magic).

    Args:
        path: File path.

    Returns:
        ``True`` for DICOM files.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    """Min-max scale an array to ``[0, 1]`` (a constant image becomes all zeros)."""
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


def read_dicom(path: str | Path) -> np.ndarray:
    """Read a DICOM radiograph as a ``float32`` array in ``[0, 1]`` (bright = dense).

    Applies the modality LUT (Rescale Slope/Intercept), then the VOI LUT / window when present,
    inverts ``MONOCHROME1`` and takes the first frame of multi-frame files.

    Args:
        path: DICOM file path.

    Returns:
        2-D ``float32`` array scaled to ``[0, 1]``.

    Raises:
        ValueError: If the file holds no pixel data or a colour image that cannot be reduced.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(str(path))
    if "PixelData" not in dataset:
        raise ValueError(f"DICOM file {path} has no pixel data; remove it or point to the image.")
    pixels = dataset.pixel_array
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and photometric.startswith("MONOCHROME"):
        pixels = pixels[0]  # multi-frame: first frame
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        rgb = pixels[0] if pixels.ndim == 4 else pixels
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(
                f"DICOM file {path} has photometric interpretation {photometric!r} with shape "
                f"{tuple(pixels.shape)}; convert it to a grayscale image."
            )
        return _scale_to_unit(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    values = apply_modality_lut(pixels, dataset)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = apply_voi_lut(values, dataset, index=0, prefer_lut=True)
    values = _scale_to_unit(np.asarray(values, dtype=np.float32))
    if photometric == "MONOCHROME1":
        values = 1.0 - values
    return values


def read_raster(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF image with Pillow as a ``float32`` array in ``[0, 1]``.

    8-bit images are divided by 255, 16-bit ones (``I;16`` / ``I`` modes) by 65535, so the
    full dynamic range of 16-bit radiographs survives; colour images become luminance.

    Args:
        path: Image file path.

    Returns:
        2-D ``float32`` array in ``[0, 1]``.
    """
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            array = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        elif image.mode == "I":
            raw = np.asarray(image, dtype=np.int64)
            scale = 65535.0 if raw.max() > 255 else 255.0
            array = np.clip(raw.astype(np.float32) / scale, 0.0, 1.0)
        elif image.mode == "F":
            array = _scale_to_unit(np.asarray(image, dtype=np.float32))
        else:
            array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return array


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported radiograph as a 2-D ``float32`` array in ``[0, 1]``.

    Args:
        path: PNG (8/16-bit), JPEG, TIFF or DICOM file.

    Returns:
        2-D ``float32`` array in ``[0, 1]``, bright = dense.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist; check the image path/root.")
    return read_dicom(path) if is_dicom(path) else read_raster(path)


def verify_image(path: str | Path) -> str | None:
    """Cheaply check that an image file exists and has a readable header.

    Uses ``PIL.Image.verify()`` for raster images and ``pydicom.dcmread(stop_before_pixels=True)``
    (plus a check for Rows/Columns) for DICOM; pixels are not decoded.

    Args:
        path: Image path.

    Returns:
        ``None`` when the file looks fine, else a short description of the problem.
    """
    path = Path(path)
    if not path.is_file():
        return "file not found"
    try:
        if is_dicom(path):
            import pydicom

            dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
            if "Rows" not in dataset or "Columns" not in dataset:
                return "DICOM header has no image size (Rows/Columns); not an image"
        else:
            with Image.open(path) as image:
                image.verify()
    except Exception as error:  # any decoder error means "corrupt" for our purposes
        return f"unreadable image ({type(error).__name__}: {error})"
    return None


def build_image_transform(
    image_size: int | Sequence[int] = 224,
    train: bool = False,
    mean: float = 0.5,
    std: float = 0.5,
    augment: bool = True,
    rotation_degrees: float = 5.0,
    translate: float = 0.05,
    scale: tuple[float, float] = (0.95, 1.05),
    brightness: float = 0.1,
    contrast: float = 0.1,
    horizontal_flip: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build the torchvision v2 pipeline from a ``[1, H, W]`` float image in ``[0, 1]``.

    Resize (bilinear, antialiased) to ``image_size`` → (train only, if ``augment``) small random
    affine (rotation/translation/scale) and brightness/contrast jitter → optional horizontal flip
    (off by default, see the module docstring) → normalise with ``(x - mean) / std``.

    Args:
        image_size: Output size, an int (square) or ``(height, width)``. The paper uses 224/256.
        train: Whether to add training-time augmentation.
        mean: Normalisation mean (single channel).
        std: Normalisation standard deviation (single channel).
        augment: Turn training augmentation off even when ``train`` is true.
        rotation_degrees: Maximum absolute rotation angle of the random affine.
        translate: Maximum translation as a fraction of the image size.
        scale: Random zoom range.
        brightness: Brightness jitter factor.
        contrast: Contrast jitter factor.
        horizontal_flip: Add a random horizontal flip (p=0.5) at train time. Off by default.

    Returns:
        A callable mapping ``FloatTensor [1, H, W]`` to the normalised ``FloatTensor [1, h, w]``.

    Raises:
        ValueError: If ``image_size`` or ``std`` is not positive.
    """
    size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(s) for s in image_size]
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be a positive int or (height, width); got {image_size}.")
    if std <= 0:
        raise ValueError(f"std must be positive; got {std}.")
    steps: list[Callable[..., torch.Tensor]] = [v2.Resize(size, antialias=True)]
    if train and augment:
        steps.append(
            v2.RandomAffine(degrees=rotation_degrees, translate=(translate, translate), scale=scale)
        )
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast))
        if horizontal_flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(v2.ToDtype(torch.float32, scale=False))
    steps.append(v2.Normalize(mean=[mean], std=[std]))
    return v2.Compose(steps)


def load_image(
    path: str | Path, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Read an image file into a ``FloatTensor [1, H, W]`` and apply ``transform``.

    Args:
        path: Image path (any format :func:`read_image` supports).
        transform: Optional transform, e.g. from :func:`build_image_transform`.

    Returns:
        ``FloatTensor [1, H, W]``.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(read_image(path))).unsqueeze(0)
    return transform(tensor) if transform is not None else tensor


__all__ = [
    "DICOM_SUFFIXES",
    "build_image_transform",
    "is_dicom",
    "load_image",
    "read_dicom",
    "read_image",
    "read_raster",
    "verify_image",
]
