"""Reading chest radiographs (PNG 8/16-bit, JPEG, DICOM) and torchvision v2 image transforms.

Two ways to read a file:

- :func:`read_resized` (what the data modules use): decode and resize to the training size in
  one step, in the file's own integer type (``uint8`` for 8-bit files, ``uint16`` for 16-bit
  ones), and convert to float only afterwards (:func:`to_unit_float`), so a 2048 x 2500 film is
  never held as a full-size ``float32`` array. Raster files are decoded and resized by Pillow
  (antialiased bilinear, the same filter as ``torchvision``'s antialiased resize) and a JPEG is
  decoded at a reduced DCT scale when that still covers the target size. Each file is opened
  once: the format is chosen by suffix, and an unrecognised file is checked for the DICOM
  preamble only after Pillow cannot read it.
- :func:`read_image`: the full-resolution 2-D ``float32`` array in ``[0, 1]``.

Either way *bright = dense* (bone white, air black), whatever the file format:

- PNG/JPEG/TIFF via Pillow; 16-bit PNGs keep their full range (divided by the bit depth's
  maximum, not squashed to 8 bit); colour images are converted to luminance.
- DICOM via pydicom: the modality LUT (Rescale Slope/Intercept) is applied, then the VOI LUT or
  window (Window Center/Width) when the file has one, and ``MONOCHROME1`` images are inverted so
  that they look like ``MONOCHROME2``; the result is min-max scaled to ``[0, 1]``. Needs the
  ``dicom`` extra (``pip install "medllama-fusion[dicom]"``).

The transforms (:func:`build_image_transform`) turn that array into a normalised
``FloatTensor [1, H, W]``. Training-time augmentation is deliberately light (small affine /
rotation, brightness/contrast jitter) and has **no horizontal flip by default**: a flipped chest
film moves the heart to the right (dextrocardia) and swaps the side of left/right findings, which
changes the meaning of labels such as cardiomegaly and of laterality words in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from medllama_fusion.errors import InputError
from medllama_fusion.extras import require

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")

_T = TypeVar("_T")


def _has_dicom_suffix(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES


def _has_dicom_preamble(path: Path) -> bool:
    """Whether the file has the ``DICM`` magic after the 128-byte preamble."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom(path: str | Path) -> bool:
    """Tell whether ``path`` is a DICOM file (by suffix, else by the ``DICM`` preamble magic).

    The readers do not call this for every file: they go by suffix and look for the preamble
    only when Pillow cannot identify a file.

    Args:
        path: File path.

    Returns:
        ``True`` for DICOM files.
    """
    path = Path(path)
    return _has_dicom_suffix(path) or _has_dicom_preamble(path)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from an int (square) or a pair; raises ``ValueError`` otherwise."""
    pair = [int(size)] * 2 if isinstance(size, int) else [int(s) for s in size]
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"image_size must be a positive int or (height, width); got {size}.")
    return pair[0], pair[1]


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
        InputError: If pydicom is not installed (the ``dicom`` extra).
    """
    require("dicom", "DICOM images")
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


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist; check the image path/root.")
    return path


def _by_format(path: Path, raster: Callable[[Path], _T], dicom: Callable[[Path], _T]) -> _T:
    """Run ``raster(path)`` or ``dicom(path)`` with the file opened once in the common case.

    A DICOM suffix goes to ``dicom``; anything else to ``raster`` (Pillow), and only a file
    Pillow cannot identify is checked for the ``DICM`` preamble and given to ``dicom``.
    """
    if not _has_dicom_suffix(path):
        try:
            return raster(path)
        except UnidentifiedImageError:
            if not _has_dicom_preamble(path):
                raise
    return dicom(path)


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported radiograph as a full-size 2-D ``float32`` array in ``[0, 1]``.

    Args:
        path: PNG (8/16-bit), JPEG, TIFF or DICOM file (DICOM is recognised by its suffix or,
            for a file Pillow cannot identify, by its ``DICM`` preamble).

    Returns:
        2-D ``float32`` array in ``[0, 1]``, bright = dense.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    return _by_format(_check_file(path), read_raster, read_dicom)


def resize_pil_image(image: Image.Image, size: int | Sequence[int]) -> torch.Tensor:
    """Resize a PIL image to a ``[1, h, w]`` tensor in its own integer type (one channel).

    The in-memory counterpart of :func:`read_resized`: 8-bit and colour images give ``uint8``
    (colour reduced to luminance), 16-bit ones ``uint16``, ``"I"`` images ``uint8`` or ``uint16``
    by their range and ``"F"`` images ``float32`` min-max scaled to ``[0, 1]``.

    Args:
        image: The image.
        size: Output size, an int (square) or ``(height, width)``.

    Returns:
        ``Tensor [1, h, w]``.
    """
    height, width = _size_pair(size)
    if image.mode in _SIXTEEN_BIT_MODES:
        if image.mode != "I;16":
            image = image.convert("I")
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.array(resized).astype(np.uint16)  # "I" holds 16-bit values here
    elif image.mode == "I":
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
        raw = np.array(resized, dtype=np.int64)
        high = 65535 if raw.max() > 255 else 255
        array = np.clip(raw, 0, high).astype(np.uint16 if high > 255 else np.uint8)
    elif image.mode == "F":
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
        array = _scale_to_unit(np.array(resized, dtype=np.float32))
    else:
        gray = image if image.mode == "L" else image.convert("L")
        resized = (
            gray
            if gray.size == (width, height)
            else gray.resize((width, height), Image.Resampling.BILINEAR)
        )
        array = np.array(resized, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(0)


def _resized_raster(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """Decode + resize a raster file with Pillow, keeping its integer type (see the module)."""
    height, width = size
    with Image.open(path) as opened:
        if opened.format == "JPEG":
            opened.draft("L", (width, height))  # decode at the smallest DCT scale >= the target
        return resize_pil_image(opened, size)


def read_resized(path: str | Path, size: int | Sequence[int]) -> torch.Tensor:
    """Decode an image file straight to its resized ``[1, h, w]`` tensor, before any float.

    8-bit files give ``uint8``, 16-bit files ``uint16`` and DICOM / floating-point files
    ``float32`` in ``[0, 1]``; :func:`to_unit_float` turns any of them into ``[0, 1]`` floats.
    The aspect ratio is not kept (the image is stretched to ``size``, as in training).

    Args:
        path: PNG (8/16-bit), JPEG, TIFF or DICOM file.
        size: Output size, an int (square) or ``(height, width)``.

    Returns:
        ``Tensor [1, h, w]`` of dtype ``uint8``, ``uint16`` or ``float32``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``size`` is not positive.
    """
    target = _size_pair(size)

    def resized_dicom(file: Path) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(read_dicom(file))).unsqueeze(0)
        return F.resize(pixels, list(target), antialias=True)

    return _by_format(_check_file(path), lambda file: _resized_raster(file, target), resized_dicom)


ImageInput = Any
"""An image as :func:`to_resized` takes it: a path, a PIL image, a NumPy array or a tensor."""


def to_resized(image: ImageInput, size: int | Sequence[int]) -> torch.Tensor:
    """Bring one image, in any form, to the resized ``[1, h, w]`` tensor the datasets read.

    Files go through :func:`read_resized` (as the data modules read them); PIL images and 8- or
    16-bit arrays through the same Pillow resize in their integer type, so every form of the same
    8-bit picture gives the same tensor. Float arrays and tensors (values in ``[0, 1]``) are
    resized as floats. Arrays may be ``[H, W]``, ``[1, H, W]`` or ``[H, W, 3]`` (RGB, reduced to
    luminance as Pillow reads a colour file).

    Args:
        image: A path (``str``/``Path``), a PIL image, a NumPy array or a tensor.
        size: Output size, an int (square) or ``(height, width)``.

    Returns:
        ``Tensor [1, h, w]`` (``uint8``, ``uint16`` or ``float32``).

    Raises:
        InputError: For another type or an array of another shape.
    """
    if isinstance(image, (str, Path)):
        return read_resized(image, size)
    if isinstance(image, Image.Image):
        return resize_pil_image(image, size)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"image of type {type(image).__name__} is not supported; pass a file path, a PIL "
            "image, a NumPy array or a tensor."
        )
    array = np.squeeze(image)
    colour = array.ndim == 3 and array.shape[-1] in (3, 4)
    if colour and array.dtype == np.uint8:
        return resize_pil_image(Image.fromarray(np.ascontiguousarray(array[..., :3])), size)
    if colour:
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], "float32")
    if array.ndim != 2:
        raise InputError(
            f"image array has shape {tuple(image.shape)}; pass a 2-D grayscale array "
            "[H, W] (or [1, H, W], or [H, W, 3] RGB)."
        )
    if array.dtype in (np.uint8, np.uint16):
        return resize_pil_image(Image.fromarray(np.ascontiguousarray(array)), size)
    unit = torch.from_numpy(np.clip(array.astype(np.float32), 0.0, 1.0))[None]
    return F.resize(unit, list(_size_pair(size)), antialias=True)


def to_unit_float(image: torch.Tensor) -> torch.Tensor:
    """Convert a ``uint8`` / ``uint16`` / float image tensor to ``float32`` in ``[0, 1]``.

    Args:
        image: Tensor from :func:`read_resized` (integers are divided by their type's maximum;
            floats are returned as ``float32`` unchanged).

    Returns:
        ``float32`` tensor of the same shape.
    """
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    if image.dtype == torch.uint16:
        return image.to(torch.float32).div_(65535.0)
    return image.to(torch.float32)


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

    def raster(file: Path) -> str | None:
        with Image.open(file) as image:
            image.verify()
        return None

    def dicom(file: Path) -> str | None:
        require("dicom", "DICOM images")
        import pydicom

        dataset = pydicom.dcmread(str(file), stop_before_pixels=True)
        if "Rows" not in dataset or "Columns" not in dataset:
            return "DICOM header has no image size (Rows/Columns); not an image"
        return None

    try:
        return _by_format(path, raster, dicom)
    except InputError:
        raise  # a missing extra is not a corrupt file
    except Exception as error:  # any decoder error means "corrupt" for our purposes
        return f"unreadable image ({type(error).__name__}: {error})"


class PrepareImage:
    """First step of :func:`build_image_transform`: bring an image into the pipeline's types.

    A ``uint16`` tensor becomes ``float32`` in ``[0, 1]`` (torchvision's geometric kernels do
    not take it). With ``pil=True`` (augmenting pipelines) a single-channel ``uint8`` tensor
    becomes an 8-bit PIL image, so torchvision runs the augmentation with Pillow's kernels, about
    ten times faster than its tensor kernels on a ``224 x 224`` image; without augmentation the
    tensor stays a tensor (cheaper than a round trip through Pillow). Floats and PIL images pass
    through.

    Args:
        pil: Turn single-channel ``uint8`` tensors into PIL images.
    """

    def __init__(self, pil: bool) -> None:
        self.pil = pil

    def __call__(self, image: torch.Tensor | Image.Image) -> torch.Tensor | Image.Image:
        """Convert ``image`` (see the class docstring)."""
        if not isinstance(image, torch.Tensor):
            return image
        if image.dtype == torch.uint8:
            if self.pil and image.ndim == 3 and image.shape[0] == 1:
                return Image.fromarray(image[0].numpy())
            return image
        return to_unit_float(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pil={self.pil})"


def _unit_tensor(image: torch.Tensor | Image.Image) -> torch.Tensor:
    """A PIL image or tensor as a plain ``float32`` tensor ``[C, H, W]`` in ``[0, 1]``."""
    tensor = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image
    return to_unit_float(tensor.as_subclass(torch.Tensor))


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
) -> Callable[[Any], torch.Tensor]:
    """Build the torchvision v2 pipeline from a ``[1, H, W]`` image to the model input.

    Resize (bilinear, antialiased; nothing to do for an image :func:`read_resized` already
    brought to ``image_size``) → (train only, if ``augment``) small random affine
    (rotation/translation/scale) and brightness/contrast jitter → optional horizontal flip (off
    by default, see the module docstring) → ``float32`` in ``[0, 1]`` (:func:`to_unit_float`) →
    normalise with ``(x - mean) / std``.

    The input may be what :func:`read_resized` returns (a ``uint8``/``uint16``/``float32``
    tensor), a float tensor in ``[0, 1]`` or a PIL image; the first step (:class:`PrepareImage`)
    hands 8-bit images to the augmentation as PIL images (Pillow's kernels, much faster).

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
        A callable mapping the image to the normalised ``FloatTensor [1, h, w]``.

    Raises:
        ValueError: If ``image_size`` or ``std`` is not positive.
    """
    size = list(_size_pair(image_size))
    if std <= 0:
        raise ValueError(f"std must be positive; got {std}.")
    augmenting = train and augment
    steps: list[Callable[..., Any]] = [
        PrepareImage(pil=augmenting),
        v2.Resize(size, antialias=True),
    ]
    if augmenting:
        steps.append(
            v2.RandomAffine(degrees=rotation_degrees, translate=(translate, translate), scale=scale)
        )
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast))
        if horizontal_flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(_unit_tensor)
    steps.append(v2.Normalize(mean=[mean], std=[std]))
    return v2.Compose(steps)


def load_image(
    path: str | Path,
    transform: Callable[[Any], torch.Tensor] | None = None,
    size: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Read an image file into a ``FloatTensor [1, H, W]`` and apply ``transform``.

    Args:
        path: Image path (any format :func:`read_image` supports).
        transform: Optional transform, e.g. from :func:`build_image_transform`.
        size: Decode straight to this size (:func:`read_resized`; faster for large files);
            ``None`` reads the full-size image.

    Returns:
        ``FloatTensor [1, H, W]`` in ``[0, 1]`` before ``transform``.
    """
    if size is None:
        tensor = torch.from_numpy(np.ascontiguousarray(read_image(path))).unsqueeze(0)
    else:
        resized = read_resized(path, size)
        if transform is not None:
            return transform(resized)
        tensor = to_unit_float(resized)
    return transform(tensor) if transform is not None else tensor


__all__ = [
    "DICOM_SUFFIXES",
    "ImageInput",
    "PrepareImage",
    "build_image_transform",
    "is_dicom",
    "load_image",
    "read_dicom",
    "read_image",
    "read_raster",
    "read_resized",
    "resize_pil_image",
    "to_resized",
    "to_unit_float",
    "verify_image",
]
