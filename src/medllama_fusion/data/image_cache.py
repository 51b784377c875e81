"""On-disk cache of resized images, filled on first read (epoch 1) and read from epoch 2 on.

Decoding a 2048 x 2500 PNG and resizing it costs tens of milliseconds; reading the resized
``224 x 224`` array back costs well under one. With ``image_cache_dir`` set, a data module keeps
the output of :func:`~medllama_fusion.data.images.read_resized` (before augmentation and
normalisation, so augmentation still differs per epoch) in one ``.npy`` file per image and size::

    <image_cache_dir>/<2 hex>/<sha1 of (absolute path, file size, mtime, size)>.npy

The key includes the source file's size and modification time, so a changed file is decoded
again; files are written to a temporary name and renamed, so DataLoader workers, DDP ranks and
concurrent runs can share one folder (on a shared filesystem, one folder for all nodes). Entries
are never deleted: remove the folder to reclaim the space (about 50 KB per 224² 8-bit image,
100 KB for 16-bit, 200 KB for DICOM). A cached image equals a freshly decoded one exactly.

Hand-written rather than a caching library: one ``np.save`` file per image is shareable across
processes and machines with no extra dependency. For data that outgrows one machine's disk use
the sharded streaming format instead (:mod:`medllama_fusion.data.streaming`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medllama_fusion.data.images import read_resized
from medllama_fusion.errors import InputError

CACHE_FORMAT = "1"
"""Version of the cache entries (part of every key; bumped when the decoding changes)."""


class ImageCache:
    """Resized images kept on disk, keyed by the source file's identity and the output size.

    Args:
        root: Cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def prepare(self) -> None:
        """Create the cache folder now, so a bad ``image_cache_dir`` fails before training.

        Raises:
            InputError: If the folder cannot be created or is not writable.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"image_cache_dir={str(self.root)!r}: cannot create the folder ({error}); pass a "
                "writable folder path."
            ) from None
        if not os.access(self.root, os.W_OK):
            raise InputError(
                f"image_cache_dir={str(self.root)!r} is not writable; pass a writable folder path."
            )

    def entry(self, path: str | Path, size: int | Sequence[int]) -> Path:
        """Return the cache file of image ``path`` at ``size`` (which may not exist yet).

        Args:
            path: Source image file.
            size: Output size, an int (square) or ``(height, width)``.

        Returns:
            The ``.npy`` path inside :attr:`root`.
        """
        source = Path(path).resolve()
        stat = source.stat()
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        key = "\0".join(
            (
                CACHE_FORMAT,
                str(source),
                str(stat.st_size),
                str(stat.st_mtime_ns),
                f"{height}x{width}",
            )
        )
        digest = hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def read(self, path: str | Path, size: int | Sequence[int]) -> torch.Tensor:
        """Return the resized image of ``path``: from the cache, else decoded and stored.

        Args:
            path: Source image file.
            size: Output size, an int (square) or ``(height, width)``.

        Returns:
            The tensor :func:`~medllama_fusion.data.images.read_resized` returns.

        Raises:
            InputError: If the entry cannot be written (the source file's errors pass through).
        """
        entry = self.entry(path, size)
        try:
            return torch.from_numpy(np.load(entry, allow_pickle=False))
        except (FileNotFoundError, ValueError, EOFError, OSError):
            pass  # not cached yet (or a partial file from a killed run): decode again
        image = read_resized(path, size)
        try:
            self._write(entry, image)
        except OSError as error:
            raise InputError(
                f"cannot write to the image cache {self.root} ({error}); free space or pass "
                "another image_cache_dir."
            ) from None
        return image

    def _write(self, entry: Path, image: torch.Tensor) -> None:
        """Write ``image`` to ``entry`` atomically (temporary file + rename)."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, image.numpy(), allow_pickle=False)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


__all__ = ["CACHE_FORMAT", "ImageCache"]
