"""A dataset written once into LitData's sharded streaming format, and read back as batches.

For data that outgrows one machine (MIMIC-CXR-sized: hundreds of thousands of 2-3k pixel
films), decoding and tokenizing every file on every node each epoch is the bottleneck.
:func:`write_streaming_dataset` runs a data module's :meth:`setup` once and writes every split
with :func:`litdata.optimize` into ``<output_dir>/<split>/`` (chunks of ``chunk_bytes`` plus
LitData's ``index.json``), and a ``medllama_fusion.json`` metadata file at the root holding the
data module's :class:`~medllama_fusion.data.preprocessing.Preprocessing` record (so a model
trained from the stream carries the same record as one trained from the files), the split
sizes and the training labels. One stored item holds what a batch needs, before augmentation:

- ``id`` (UTF-8 bytes), ``index`` (row in the split), ``group_index`` (report group),
- ``input_ids``: the token ids, ``int32``, unpadded and already truncated to ``max_length``,
  and ``text_present``,
- ``image``: the image decoded and resized to ``image_size`` in its own type (``uint8``,
  ``uint16`` or ``float32``, ``[1, H, W]``, exactly what
  :meth:`~medllama_fusion.data.dataset.FusionDataset.base_image` returns), and
  ``image_present``; a sample without an image stores an empty ``uint8 [1, 0, 0]`` array,
- ``labels`` (``float32 [C]``, empty for unlabelled samples) and ``has_labels``.

Every item has the same structure (LitData fixes the serializer of each field from the first
item); arrays of varying dtype and shape are fine (LitData's ``numpy`` serializer keeps both).

:func:`open_stream` reads a split back as a :class:`litdata.StreamingDataset` whose items are
rebuilt by :class:`StreamItemReader` into exactly the item dict of
:class:`~medllama_fusion.data.dataset.FusionDataset`: the image is finished with the
split's transform at read time (augmentation for ``train``, every epoch), seeded per sample by
``(seed, epoch, index)`` like the plain training loader, so a sample's augmentation does not
depend on which rank or worker reads it. LitData shards a stream across nodes, ranks and
workers by itself. ``output_dir`` / ``input_dir`` may be local folders or ``s3://`` (or
``gs://``) URLs; LitData reads credentials the usual way (for S3, boto3's environment
variables, ``~/.aws`` files or the instance role).

LitData is an optional dependency: ``pip install "medllama-fusion[streaming]"``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import torch

from medllama_fusion.data.dataset import FusionDataset
from medllama_fusion.data.loaders import sample_seed
from medllama_fusion.data.preprocessing import PREPROCESSING_KEY, Preprocessing
from medllama_fusion.errors import InputError
from medllama_fusion.extras import require

STREAM_FORMAT = "medllama-fusion-stream/2"
"""Format tag stored in the metadata file; a reader refuses other formats."""
METADATA_FILE = "medllama_fusion.json"
"""Name of the metadata file at the root of a stream."""
STREAM_SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits a stream holds (one LitData dataset folder each)."""
_NO_IMAGE = np.zeros((1, 0, 0), dtype=np.uint8)


def require_litdata() -> ModuleType:
    """Import LitData, or say how to install it (the ``streaming`` extra).

    Returns:
        The ``litdata`` module.

    Raises:
        InputError: When LitData is not installed (one line naming the ``pip install``).
    """
    require("streaming", "streaming datasets")
    import litdata

    return litdata


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL (``s3://``, ``gs://``, ...) rather than a local folder."""
    return "://" in str(path)


def join(root: str, name: str) -> str:
    """Join a folder or URL and a name with ``/``."""
    return f"{str(root).rstrip('/')}/{name}"


class StreamItemWriter:
    """Picklable ``index -> stored item`` function that :func:`litdata.optimize` maps.

    Args:
        dataset: The split's dataset after the data module's setup.
    """

    def __init__(self, dataset: FusionDataset) -> None:
        self.dataset = dataset

    def __call__(self, index: int) -> dict[str, Any]:
        """Return the stored item of sample ``index`` (see the module docstring)."""
        dataset = self.dataset
        sample = dataset.samples[index]
        image = dataset.base_image(index) if "image" in dataset.modalities else None
        tokens = dataset.input_ids[index] if "text" in dataset.modalities else []
        return {
            "id": sample.id.encode("utf-8"),
            "index": int(index),
            "group_index": int(dataset.group_index[index]),
            "input_ids": np.asarray(tokens, dtype=np.int32),
            "text_present": bool(dataset.text_present[index]),
            "image": _NO_IMAGE if image is None else np.ascontiguousarray(image.numpy()),
            "image_present": image is not None,
            "labels": np.asarray(sample.labels or (), dtype=np.float32),
            "has_labels": sample.labels is not None,
        }


class StreamItemReader:
    """Picklable LitData ``transform``: a stored item -> the ``FusionDataset`` item dict.

    Kept as a transform object (not a ``StreamingDataset`` subclass) so that LitData is
    imported only when a stream is opened. :attr:`dataset` is set by :func:`open_stream` so the
    reader sees the stream's current epoch.

    Args:
        modalities: What the items carry (a subset of the stream's modalities).
        transform: The split's image transform (augmentation for ``train``).
        image_size: ``(height, width)`` of the stored images.
        seed: Augmentation seed; ``None`` draws from the global RNG (no per-sample seeding).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        image_size: tuple[int, int],
        seed: int | None = None,
    ) -> None:
        # An empty FusionDataset only to reuse its finish_image (to float, then the transform).
        self.finisher = FusionDataset([], [], transform, modalities, image_size=image_size)
        self.modalities = self.finisher.modalities
        self.seed = seed
        self.dataset: Any = None

    def _epoch(self) -> int:
        """The epoch as the plain loader counts it (LitData counts from 1)."""
        return max(int(getattr(self.dataset, "current_epoch", 1)) - 1, 0)

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild the item dict of :meth:`FusionDataset.__getitem__` from a stored item."""
        index = int(raw["index"])
        item: dict[str, Any] = {
            "id": bytes(raw["id"]).decode("utf-8"),
            "index": index,
            "group_index": int(raw["group_index"]),
        }
        if "text" in self.modalities:
            present = bool(raw["text_present"])
            tokens = np.asarray(raw["input_ids"]) if present else np.zeros(0, dtype=np.int64)
            item["input_ids"] = torch.from_numpy(tokens.astype(np.int64))
            item["text_present"] = present
        if "image" in self.modalities:
            present = bool(raw["image_present"])
            image = torch.from_numpy(np.array(raw["image"])) if present else None
            if self.seed is None:
                item["pixel_values"] = self.finisher.finish_image(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    seed = sample_seed(self.seed, self._epoch(), index)
                    torch.default_generator.manual_seed(seed)  # CPU only, as the plain loader
                    item["pixel_values"] = self.finisher.finish_image(image)
            item["image_present"] = present
        if bool(raw["has_labels"]):
            item["labels"] = torch.from_numpy(np.array(raw["labels"], dtype=np.float32))
        return item


class StreamSource(Protocol):
    """What :func:`write_streaming_dataset` needs of a data module (the library's have it)."""

    preprocessing: Preprocessing
    datasets: Mapping[str, FusionDataset]

    @property
    def train_labels(self) -> torch.Tensor:
        """Training labels ``[N, C]``."""

    def setup(self, stage: str | None = None) -> None:
        """Load, check, split and tokenize the data."""

    def source_description(self) -> str:
        """Name the data for messages."""


def stream_metadata(datamodule: StreamSource) -> dict[str, Any]:
    """Return the metadata of a stream written from ``datamodule`` (after its setup).

    Args:
        datamodule: A data module whose :meth:`setup` has run.

    Returns:
        A JSON-serialisable dict: format, source, the preprocessing record, per-split counts and
        the training labels (``None`` when a training sample has none).
    """
    train = datamodule.datasets.get("train")
    labelled = train is None or all(s.labels is not None for s in train.samples)
    return {
        "format": STREAM_FORMAT,
        "source": datamodule.source_description(),
        PREPROCESSING_KEY: datamodule.preprocessing.to_dict(),
        "counts": {name: len(datamodule.datasets[name]) for name in STREAM_SPLITS},
        "train_labels": datamodule.train_labels.tolist() if labelled else None,
    }


def _check_output_dir(output_dir: str) -> None:
    """Refuse a local output folder that exists and is not empty."""
    if is_remote(output_dir):
        return  # LitData refuses a URL that already holds a dataset
    path = Path(output_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(
            f"output folder {path} already exists and is not empty; pass a new or empty folder "
            "(a stream is written once and never updated in place)."
        )


def _storage(url: str) -> Any:
    """LitData's storage client for ``url`` (``s3://``, ``gs://`` or ``r2://``).

    Picks LitData's public provider class by the URL's scheme, as LitData itself does.
    """
    require_litdata()
    from litdata.streaming import fs_provider

    providers = {
        "s3": fs_provider.S3FsProvider,
        "gs": fs_provider.GCPFsProvider,
        "r2": fs_provider.R2FsProvider,
    }
    scheme = urlparse(url).scheme
    if scheme not in providers:
        raise InputError(
            f"{url}: streams live in a local folder or at an s3://, gs:// or r2:// URL; got a "
            f"{scheme}:// URL."
        )
    return providers[scheme]()


def _write_text(url: str, text: str) -> None:
    """Write a small text file to a local path or, through LitData's storage client, a URL."""
    if not is_remote(url):
        Path(url).write_text(text, encoding="utf-8")
        return
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, METADATA_FILE)
        Path(local).write_text(text, encoding="utf-8")
        _storage(url).upload_file(local, url)


def _read_text(url: str) -> str | None:
    """Read a small text file from a local path or URL (``None`` when it does not exist)."""
    if not is_remote(url):
        path = Path(url)
        return path.read_text(encoding="utf-8") if path.is_file() else None
    provider = _storage(url)
    if not provider.exists(url):
        return None
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, METADATA_FILE)
        provider.download_file(url, local)
        return Path(local).read_text(encoding="utf-8")


def _check_written(split_dir: str, expected: int) -> None:
    """Raise when LitData's index of ``split_dir`` does not hold ``expected`` items.

    A writer process that dies (e.g. a script without ``if __name__ == "__main__":`` under the
    ``spawn`` start method) can leave an incomplete folder behind without an exception here.
    """
    text = _read_text(join(split_dir, "index.json"))
    written = 0 if text is None else sum(int(c["chunk_size"]) for c in json.loads(text)["chunks"])
    if written != expected:
        raise RuntimeError(
            f"LitData wrote {written} of {expected} items to {split_dir}; see the writer "
            "processes' errors above (a script that calls write_streaming_dataset needs "
            "`if __name__ == '__main__':` around it with the spawn start method)."
        )


def write_streaming_dataset(
    datamodule: StreamSource,
    output_dir: str | Path,
    splits: Sequence[str] = STREAM_SPLITS,
    num_workers: int | None = None,
    chunk_bytes: str | int = "64MB",
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write ``datamodule``'s splits once as a LitData stream (see the module docstring).

    Args:
        datamodule: Any data module of this library (``setup`` is run here).
        output_dir: New or empty local folder, or an ``s3://``/``gs://`` URL.
        splits: Splits to write (an empty split is recorded with count 0 and not written).
        num_workers: Writer processes (``None``: LitData's default, one per CPU; ``0`` = 1).
        chunk_bytes: Target chunk size (e.g. ``"64MB"``).
        start_method: Multiprocessing start method of the writer processes (``None``:
            LitData's default, ``spawn``; ``fork`` starts faster on Linux). The process-wide
            default is restored afterwards.

    Returns:
        The metadata written to ``<output_dir>/medllama_fusion.json``.

    Raises:
        InputError: When LitData is missing, ``output_dir`` is not empty, or for an unknown
            split name.
    """
    litdata = require_litdata()
    output = str(output_dir)
    unknown = [name for name in splits if name not in STREAM_SPLITS]
    if unknown:
        raise InputError(f"unknown split(s) {unknown}; choose from {list(STREAM_SPLITS)}.")
    _check_output_dir(output)
    datamodule.setup()
    metadata = stream_metadata(datamodule)
    metadata["counts"] = {
        name: (count if name in splits else 0) for name, count in metadata["counts"].items()
    }
    if not is_remote(output):
        Path(output).mkdir(parents=True, exist_ok=True)
    saved_method = multiprocessing.get_start_method(allow_none=True)
    try:
        for name in splits:
            dataset = datamodule.datasets[name]
            if len(dataset) == 0:
                continue
            litdata.optimize(
                fn=StreamItemWriter(dataset),
                inputs=list(range(len(dataset))),
                output_dir=join(output, name),
                num_workers=num_workers,
                chunk_bytes=chunk_bytes,
                keep_data_ordered=True,  # the stream's order is the split's order
                reorder_files=False,
                start_method=start_method,
                verbose=False,
            )
            _check_written(join(output, name), len(dataset))
    finally:  # LitData sets the process-wide start method; give the caller theirs back
        multiprocessing.set_start_method(saved_method, force=True)
    _write_text(join(output, METADATA_FILE), json.dumps(metadata, indent=1))
    return metadata


def read_stream_metadata(input_dir: str | Path) -> dict[str, Any]:
    """Read and check the metadata of a stream written by :func:`write_streaming_dataset`.

    Args:
        input_dir: The stream's root folder or URL.

    Returns:
        The metadata dict.

    Raises:
        InputError: When ``input_dir`` holds no metadata file of this format.
    """
    root = str(input_dir)
    url = join(root, METADATA_FILE)
    text = _read_text(url)
    hint = (
        "write one with `medllama-fusion optimize --config <run config> --output_dir "
        f"{root}` and pass that folder"
    )
    if text is None:
        raise InputError(
            f"{root} is not a stream written by medllama-fusion (no {METADATA_FILE}); {hint}."
        )
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{url} is not valid JSON ({error}); {hint}.") from error
    if not isinstance(metadata, dict) or metadata.get("format") != STREAM_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise InputError(
            f"{url} has format {found!r}, not {STREAM_FORMAT!r}; {hint} with this version."
        )
    record = metadata.get(PREPROCESSING_KEY)
    if not isinstance(record, dict):
        raise InputError(f"{url} holds no preprocessing record; {hint}.")
    Preprocessing.from_dict(record, source=url)  # raises naming the file when it is invalid
    return metadata


def open_stream(
    input_dir: str | Path,
    split: str,
    reader: StreamItemReader,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
    cache_dir: str | None = None,
) -> Any:
    """Open one split of a stream as a :class:`litdata.StreamingDataset` of item dicts.

    Args:
        input_dir: The stream's root folder or URL.
        split: ``"train"``, ``"val"`` or ``"test"``.
        reader: Rebuilds each item (set as the dataset's ``transform``).
        shuffle: Shuffle chunks and items (LitData's seeded shuffle, new order every epoch).
        seed: Shuffle seed.
        drop_last: LitData's ``drop_last`` (``None``: on in distributed runs, so every rank
            gets the same number of items).
        cache_dir: Local cache for chunks of a remote stream (``None``: LitData's default).

    Returns:
        The ``StreamingDataset``.
    """
    litdata = require_litdata()
    dataset = litdata.StreamingDataset(
        join(str(input_dir), split),
        cache_dir=cache_dir,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        transform=reader,
    )
    reader.dataset = dataset
    return dataset


__all__ = [
    "METADATA_FILE",
    "STREAM_FORMAT",
    "STREAM_SPLITS",
    "StreamItemReader",
    "StreamItemWriter",
    "StreamSource",
    "join",
    "open_stream",
    "read_stream_metadata",
    "require_litdata",
    "stream_metadata",
    "write_streaming_dataset",
]
