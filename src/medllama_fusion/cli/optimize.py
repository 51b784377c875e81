r"""``medllama-fusion optimize``: write a run's data once as a sharded stream for many nodes.

::

    medllama-fusion optimize --config paper/parallel_r2 --output_dir s3://bucket/openi-stream
    medllama-fusion fit --config paper/parallel_r2 \
        --data medllama_fusion.datamodules.StreamingDataModule \
        --data.input_dir s3://bucket/openi-stream --trainer.num_nodes 4 --trainer.devices 8

The first command builds the data module of a run configuration (a YAML file or a preset name,
``--config`` repeatable and merged in order like ``fit`` does; ``--data.<arg> VALUE`` overrides
one data argument), runs its setup (checks, split, tokenization) and writes every split,
resized but not augmented, with :func:`~medllama_fusion.data.streaming.write_streaming_dataset`.
The second trains from the stream with
:class:`~medllama_fusion.datamodules.streaming.StreamingDataModule`. Needs the ``streaming``
extra (``pip install "medllama-fusion[streaming]"``).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medllama_fusion.errors import InputError

__all__ = ["build_datamodule", "data_section", "main"]


def _config_files(config: str) -> list[Path]:
    """The YAML file(s) a ``--config`` value stands for (a file, or a preset's files)."""
    from medllama_fusion.configs import preset_files

    if Path(config).is_file():
        return [Path(config)]
    try:
        return preset_files(config)
    except FileNotFoundError as error:
        raise InputError(
            f"--config {config}: no such file and no preset of that name ({error})."
        ) from error


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a ``data:`` section into another the way repeated ``--config`` files merge.

    A different ``class_path`` replaces the section; otherwise ``init_args`` are merged key by
    key (nested dicts recursively).
    """
    if "class_path" in update and update["class_path"] != base.get("class_path"):
        return copy.deepcopy(dict(update))
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_override(data: dict[str, Any], dotted: str, value: str) -> None:
    """Apply ``--data.<dotted> value`` (``init_args.`` may be left out, as on ``fit``)."""
    keys = dotted.split(".")
    if keys[0] not in ("class_path", "init_args"):
        keys = ["init_args", *keys]
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = yaml.safe_load(value)


def data_section(configs: Sequence[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Return the merged ``data:`` section of run configs, with command-line overrides.

    Args:
        configs: YAML files or preset names, merged in order.
        overrides: ``["--data.root", "/data/openi", ...]`` pairs.

    Returns:
        ``{"class_path": ..., "init_args": {...}}``.

    Raises:
        InputError: For a missing file, a config without ``data:`` or a malformed override.
    """
    data: dict[str, Any] = {}
    for config in configs:
        for path in _config_files(config):
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            section = loaded.get("data") if isinstance(loaded, Mapping) else None
            if isinstance(section, Mapping):
                data = _merge(data, section)
    if len(overrides) % 2:
        raise InputError(
            f"data overrides come in pairs `--data.NAME VALUE`; got {list(overrides)}."
        )
    for flag, value in zip(overrides[::2], overrides[1::2], strict=True):
        if not flag.startswith("--data."):
            raise InputError(
                f"unknown argument {flag}; optimize takes --config, --output_dir, "
                "--num_workers, --chunk_bytes, --start_method and --data.NAME VALUE."
            )
        _set_override(data, flag.removeprefix("--data."), value)
    if "class_path" not in data:
        raise InputError(
            f"{' + '.join(configs)} has no `data: class_path:` section; pass the config used "
            "for `fit`."
        )
    return data


def build_datamodule(data: Mapping[str, Any]) -> Any:
    """Instantiate the data module a ``data:`` section describes (as LightningCLI would).

    Args:
        data: ``{"class_path": ..., "init_args": {...}}``.

    Returns:
        The data module (not set up).
    """
    from jsonargparse import ArgumentParser

    import medllama_fusion.datamodules  # noqa: F401  (short class names)
    from medllama_fusion.datamodules import FusionDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(FusionDataModule, "data", fail_untyped=False)
    try:
        parsed = parser.parse_object({"data": dict(data)})
    except Exception as error:  # jsonargparse reports every type/argument problem this way
        raise InputError(f"the data section is not valid: {error}") from error
    return parser.instantiate_classes(parsed).data


def main(argv: Sequence[str] | None = None) -> None:
    """``medllama-fusion optimize``: write the data of a run config as a stream.

    Args:
        argv: Arguments after the subcommand.
    """
    parser = argparse.ArgumentParser(
        prog="medllama-fusion optimize",
        description=(
            "Check, split, tokenize and resize a run's data once and write it as a sharded "
            "LitData stream that StreamingDataModule reads on any number of nodes."
        ),
        epilog="--data.NAME VALUE overrides one data argument (e.g. --data.root /data/openi).",
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="run config YAML or preset name (repeatable, merged in order)",
    )
    parser.add_argument(
        "--output_dir", required=True, help="new or empty folder, or s3://bucket/prefix"
    )
    parser.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="writer processes (default: one per CPU)",
    )
    parser.add_argument("--chunk_bytes", default="64MB", help="chunk size (default: 64MB)")
    parser.add_argument(
        "--start_method",
        choices=("spawn", "fork", "forkserver"),
        default=None,
        help="start method of the writer processes (default: spawn)",
    )
    args, overrides = parser.parse_known_args(list(argv) if argv is not None else None)
    from medllama_fusion.data.streaming import require_litdata, write_streaming_dataset

    require_litdata()
    datamodule = build_datamodule(data_section(args.config, overrides))
    start = time.perf_counter()
    metadata = write_streaming_dataset(
        datamodule,
        args.output_dir,
        num_workers=args.num_workers,
        chunk_bytes=args.chunk_bytes,
        start_method=args.start_method,
    )
    shown = args.output_dir if "://" in args.output_dir else str(Path(args.output_dir).resolve())
    counts = ", ".join(f"{name} {count}" for name, count in metadata["counts"].items())
    print(
        f"stream written to {shown} ({counts} samples; {time.perf_counter() - start:.1f} s)",
        flush=True,
    )
