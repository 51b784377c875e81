r"""Input pipeline speed: the library's loaders against the bare decode + resize limit, CPU.

For each file size (default: 2048 x 2500 8-bit PNGs like the OpenI originals, and 512 x 512
PNGs like the MONAI TransCheX copies) the script writes a MONAI-layout folder of generated
film-like images (smooth anatomy + noise, PNG level 6) and measures, in one process, samples/s
of:

* **limit** - bare decode + resize to 224 x 224 of the same files with the fastest of
  Pillow and ``torchvision.io`` (chosen on the first files of the run), in ``w`` processes
  (a :class:`multiprocessing.Pool`; ``w = 0`` is the main process);
* **train loader** - :class:`~medllama_fusion.datamodules.FusionDataModule`'s training loader
  with ``num_workers = w`` (augmentation on, tokens, labels, collation: everything a step gets);
* **eval loader** - the validation loader's path (no augmentation) over the same files;
* **previous path** - how images were read before (full-size ``float32`` decode, then resize,
  and a second open of each file to look for a DICOM preamble), main process only;
* **cache** - the training loader with ``image_cache_dir``: epoch 1 fills the cache, epoch 2
  reads it;
* **streaming** - the same training split written once with ``medllama-fusion optimize``'s
  writer and read back through :class:`~medllama_fusion.datamodules.StreamingDataModule`
  (when LitData is installed).

Each measurement runs ``--repeats`` times, interleaved, and the best rate is kept, so load from
other processes affects the loader and its limit alike. Ratios are per worker count.

Rates are steady-state: timed from the first item or batch a pool or loader delivers, so worker
start-up (paid once per run with persistent workers) is left out of both sides.

Example (about 10 minutes on 2 cores; the generated files are kept in ``--data-dir``)::

    OMP_NUM_THREADS=1 python benchmarks/data_speed.py --sizes 2500x2048:300 512x512:2000 \
        --workers 0 1 2 --json data_speed.json
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medllama_fusion.data.curation import CurationSettings
from medllama_fusion.data.images import (
    build_image_transform,
    is_dicom,
    load_image,
)
from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.datasets import OpenIDataset
from medllama_fusion.datasets.labels import OPENI_LABELS

TARGET = 224
REPORT = "FINDINGS : The heart size is normal. The lungs are clear. IMPRESSION : No acute disease."


# ---------------------------------------------------------------- files


def film(height: int, width: int, seed: int) -> np.ndarray:
    """A film-like 8-bit image: bright mediastinum and bones, dark lungs, film noise."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:height, 0:width]
    y = y.astype(np.float32) / height
    x = x.astype(np.float32) / width
    lungs = np.exp(-(((x - 0.3) / 0.14) ** 2 + ((y - 0.5) / 0.28) ** 2))
    lungs += np.exp(-(((x - 0.7) / 0.14) ** 2 + ((y - 0.5) / 0.28) ** 2))
    ribs = 12 * (np.sin(y * 60 + x * 8) > 0.6)
    body = 170 - 90 * lungs + ribs * lungs + rng.normal(0, 3, (1, 1))
    noise = rng.normal(0, 5, (height, width)).astype(np.float32)
    return np.clip(body + noise, 0, 255).astype(np.uint8)


def write_folder(root: Path, count: int, height: int, width: int) -> Path:
    """A MONAI-layout folder (``train.csv``, ``validation.csv``, ``test.csv``, ``images/``)."""
    marker = root / ".complete"
    if marker.is_file():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    held_out = 2  # validation and test are not measured
    names = [f"CXR{i + 1}_1_IM-{i + 1:04d}-3001.png" for i in range(count + 2 * held_out)]
    for i, name in enumerate(names):
        Image.fromarray(film(height, width, i), mode="L").save(root / "images" / name)
    columns = ["id", "report", *(label.replace("-", "_") for label in OPENI_LABELS)]
    splits = {
        "train.csv": names[:count],
        "validation.csv": names[count : count + held_out],
        "test.csv": names[count + held_out :],
    }
    for file_name, rows in splits.items():
        with (root / file_name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for i, name in enumerate(rows):
                labels = [str(int((i + k) % 5 == 0)) for k in range(len(OPENI_LABELS))]
                writer.writerow([name, REPORT, *labels])
    from medllama_fusion.demo import build_demo_tokenizer

    build_demo_tokenizer([REPORT]).save_pretrained(str(root / "tokenizer"))  # type: ignore[attr-defined]
    marker.touch()
    return root


# ---------------------------------------------------------------- bare decoders


def pil_decode_resize(path: str) -> np.ndarray:
    """Pillow decode + Pillow antialiased bilinear resize."""
    with Image.open(path) as image:
        gray = image.convert("L") if image.mode != "L" else image
        return np.array(gray.resize((TARGET, TARGET), Image.Resampling.BILINEAR))


def torchvision_decode_resize(path: str) -> np.ndarray:
    """``torchvision.io`` decode + ``torchvision`` antialiased bilinear resize (uint8)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    image = decode_image(path, mode=ImageReadMode.GRAY)
    return F.resize(image, [TARGET, TARGET], antialias=True).numpy()


def torchvision_decode_pil_resize(path: str) -> np.ndarray:
    """``torchvision.io`` decode + Pillow resize."""
    from torchvision.io import ImageReadMode, decode_image

    image = decode_image(path, mode=ImageReadMode.GRAY)[0].numpy()
    resized = Image.fromarray(image).resize((TARGET, TARGET), Image.Resampling.BILINEAR)
    return np.array(resized)


DECODERS: dict[str, Callable[[str], np.ndarray]] = {
    "pillow": pil_decode_resize,
    "torchvision.io": torchvision_decode_resize,
    "torchvision.io + pillow resize": torchvision_decode_pil_resize,
}


def previous_path(path: str, transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The former per-item path: DICOM sniff (second open), full-size float32, then resize."""
    is_dicom(path)
    return load_image(path, transform)


def _init_worker() -> None:
    torch.set_num_threads(1)


def steady_rate(counts: Iterable[int]) -> float:
    """Items/s of a stream of item counts, timed from the first arrival (start-up excluded).

    A stream of a single batch is timed from the start instead (tiny test runs).
    """
    begin = start = time.perf_counter()
    first = seen = 0
    for i, count in enumerate(counts):
        if i == 0:
            start, first = time.perf_counter(), count
        else:
            seen += count
    if seen == 0:
        return first / (start - begin)
    return seen / (time.perf_counter() - start)


def rate_of(function: Callable[[str], Any], files: list[str], workers: int) -> float:
    """Samples/s of ``function`` over ``files`` in ``workers`` processes (0: this one)."""
    if workers == 0:
        return steady_rate(1 for path in files if function(path) is not None)
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=_init_worker) as pool:
        return steady_rate(1 for _ in pool.imap_unordered(function, files, chunksize=2))


# ---------------------------------------------------------------- loaders


def loader_rate(batches: Iterable[dict[str, Any]]) -> float:
    """Samples/s of one pass over ``batches``, from the first batch on (start-up excluded)."""
    return steady_rate(len(batch["ids"]) for batch in batches)


def datamodule(root: Path, workers: int, **options: Any) -> FusionDataModule:
    """The MONAI-layout data module of ``root`` (paper batch size, 224 x 224)."""
    dm = FusionDataModule(
        OpenIDataset(root),
        preprocessing=Preprocessing(image_size=TARGET, max_length=64),
        loader=LoaderSettings(batch_size=20, num_workers=workers, persistent_workers=False),
        curation=CurationSettings(verify_images=False),
        **options,
    )
    dm.setup("fit")
    return dm


def eval_batches(dm: FusionDataModule) -> Iterable[dict[str, Any]]:
    """The training split read the way validation reads (no augmentation, no shuffle)."""
    dataset = dm.datasets["train"]
    dataset.transform = dm.preprocessing.image_transform(train=False)
    return torch.utils.data.DataLoader(dataset, **dm.loader.options(dm.collator()))


def streaming_rates(root: Path, workers: int, scratch: Path) -> dict[str, float] | None:
    """Write the training split as a LitData stream and read it back; ``None`` without LitData."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        return None
    from medllama_fusion.data.streaming import write_streaming_dataset
    from medllama_fusion.datamodules import StreamingDataModule

    output = scratch / "stream"
    shutil.rmtree(output, ignore_errors=True)
    dm = datamodule(root, 0)
    start = time.perf_counter()
    write_streaming_dataset(
        dm, str(output), splits=("train",), num_workers=max(workers, 1), start_method="fork"
    )
    written = len(dm.datasets["train"]) / (time.perf_counter() - start)
    stream = StreamingDataModule(
        str(output),
        loader=LoaderSettings(batch_size=20, num_workers=workers),
        chunk_cache_dir=str(scratch / "chunks"),
    )
    stream.setup("fit")
    read = max(loader_rate(stream.train_dataloader()) for _ in range(2))
    return {"write": written, "read": read}


# ---------------------------------------------------------------- main


def measure(root: Path, workers: list[int], repeats: int, scratch: Path) -> dict[str, Any]:
    """All rates for one folder."""
    with (root / "train.csv").open(newline="", encoding="utf-8") as handle:
        files = [str(root / "images" / row["id"]) for row in csv.DictReader(handle)]
    probe = files[: min(len(files), 12)]
    timings = {name: rate_of(fn, probe, 0) for name, fn in DECODERS.items()}
    fastest = max(timings, key=lambda name: timings[name])
    decoder = DECODERS[fastest]
    eval_transform = build_image_transform(TARGET, train=False)
    previous = max(
        rate_of(lambda p: previous_path(p, eval_transform), files, 0) for _ in range(repeats)
    )
    rows = []
    for w in workers:
        dm = datamodule(root, w)
        limit = train = evaluation = 0.0
        for _ in range(repeats):  # interleaved; best of each
            limit = max(limit, rate_of(decoder, files, w))
            train = max(train, loader_rate(dm.train_dataloader()))
            evaluation = max(evaluation, loader_rate(eval_batches(datamodule(root, w))))
        rows.append(
            {
                "workers": w,
                "limit": limit,
                "train_loader": train,
                "eval_loader": evaluation,
                "train_ratio": train / limit,
                "eval_ratio": evaluation / limit,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    w = max(workers)
    cache_dir = scratch / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cached = datamodule(root, w, image_cache_dir=str(cache_dir))
    first = loader_rate(cached.train_dataloader())
    later = max(loader_rate(cached.train_dataloader()) for _ in range(repeats))
    decoding = next(row["train_loader"] for row in rows if row["workers"] == w)
    result: dict[str, Any] = {
        "files": len(files),
        "decoder_probe": timings,
        "decoder": fastest,
        "previous_path": previous,
        "workers": rows,
        "cache": {
            "workers": w,
            "epoch1": first,
            "epoch2": later,
            "speedup": later / decoding,
        },
    }
    streaming = streaming_rates(root, w, scratch)
    if streaming is not None:
        streaming["speedup"] = streaming["read"] / decoding
        result["streaming"] = streaming
    return result


def parse_size(text: str, count: int) -> tuple[int, int, int]:
    """``HEIGHTxWIDTH[:COUNT]`` → ``(height, width, count)``."""
    shape, _, number = text.lower().partition(":")
    height, width = (int(part) for part in shape.split("x"))
    return height, width, int(number) if number else count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and optionally save the results.

    Args:
        argv: Command-line arguments (see ``--help``).

    Returns:
        The results dict (also written to ``--json``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="images per size without :COUNT")
    parser.add_argument(
        "--sizes", nargs="+", default=["2500x2048:300", "512x512:2000"], help="HxW[:COUNT]"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="keep generated folders here")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = Path(args.data_dir or tempfile.mkdtemp(prefix="data_speed_"))
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": multiprocessing.cpu_count(),
        "torch": torch.__version__,
        "target": TARGET,
        "sizes": {},
    }
    for text in args.sizes:
        height, width, count = parse_size(text, args.count)
        root = write_folder(base / f"{height}x{width}_{count}", count, height, width)
        with tempfile.TemporaryDirectory() as scratch:
            results["sizes"][text] = measure(root, args.workers, args.repeats, Path(scratch))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
