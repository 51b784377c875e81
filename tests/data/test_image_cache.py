"""The on-disk cache of resized images: same pixels, no decoding the second time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medllama_fusion.data import image_cache
from medllama_fusion.data.image_cache import ImageCache
from medllama_fusion.data.images import read_resized
from medllama_fusion.errors import InputError
from tests.data.test_read_resized import film


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(path: str | Path, size: int) -> torch.Tensor:
        calls.append(str(path))
        return read_resized(path, size)

    monkeypatch.setattr(image_cache, "read_resized", counting)
    return calls


def test_second_read_comes_from_the_cache(tmp_path: Path, decodes: list[str]) -> None:
    Image.fromarray(film(), mode="L").save(tmp_path / "a.png")
    Image.fromarray(np.full((50, 60), 65000, np.uint16)).save(tmp_path / "b16.png")
    cache = ImageCache(tmp_path / "cache")
    first = [cache.read(tmp_path / "a.png", 32), cache.read(tmp_path / "b16.png", (16, 24))]
    second = [cache.read(tmp_path / "a.png", 32), cache.read(tmp_path / "b16.png", (16, 24))]
    assert len(decodes) == 2
    for one, two in zip(first, second, strict=True):
        assert one.dtype == two.dtype and torch.equal(one, two)
    assert second[1].dtype == torch.uint16
    assert torch.equal(second[0], read_resized(tmp_path / "a.png", 32))
    cache.read(tmp_path / "a.png", 48)  # another size is another entry
    assert len(decodes) == 3


def test_changed_file_is_decoded_again(tmp_path: Path, decodes: list[str]) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(film(seed=1), mode="L").save(path)
    cache = ImageCache(tmp_path / "cache")
    old = cache.read(path, 32)
    Image.fromarray(255 - film(seed=2), mode="L").save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    new = cache.read(path, 32)
    assert len(decodes) == 2 and not torch.equal(old, new)


def test_partial_entry_is_rewritten(tmp_path: Path, decodes: list[str]) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(film(), mode="L").save(path)
    cache = ImageCache(tmp_path / "cache")
    entry = cache.entry(path, 32)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"\x93NUMPY")  # a run killed while writing
    assert torch.equal(cache.read(path, 32), read_resized(path, 32))
    assert torch.equal(cache.read(path, 32), read_resized(path, 32))
    assert len(decodes) == 1
    assert not list(entry.parent.glob("*.tmp"))


def test_unusable_cache_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(film(), mode="L").save(path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=r"image_cache_dir=.*a_file.*cannot create the folder"):
        ImageCache(blocker).prepare()
    cache = ImageCache(tmp_path / "cache")
    cache.prepare()
    entry = cache.entry(path, 32)
    entry.parent.write_text("a file where the entry's folder goes")
    with pytest.raises(InputError, match="cannot write to the image cache"):
        cache.read(path, 32)
