"""Build data modules in the tests from the settings each test varies.

The data modules take their settings grouped (``source``, ``preprocessing``, ``loader``,
``augmentation``, ``curation``, ``split``); :func:`openi_datamodule` and :func:`csv_datamodule`
route each keyword to its group by name, so a test names only what it changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from medllama_fusion.data.curation import CurationSettings
from medllama_fusion.data.loaders import LoaderSettings
from medllama_fusion.data.preprocessing import Augmentation, Preprocessing
from medllama_fusion.data.splits import SplitSettings
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.datasets import CSVDataset, OpenIDataset

GROUPS: dict[str, type] = {
    "preprocessing": Preprocessing,
    "loader": LoaderSettings,
    "curation": CurationSettings,
}
RENAMED = {
    "augment": ("augmentation", "enabled"),
    "horizontal_flip": ("augmentation", "horizontal_flip"),
    "split_sizes": ("split", "sizes"),
    "split_seed": ("split", "seed"),
    "stratify": ("split", "stratify"),
}
KEPT = ("cache_dir", "image_cache_dir", "model_compiles")


def _grouped(options: dict[str, Any]) -> dict[str, Any]:
    grouped: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in RENAMED:
            group, name = RENAMED[key]
            grouped.setdefault(group, {})[name] = value
            continue
        if key in KEPT:
            kwargs[key] = value
            continue
        for group, cls in GROUPS.items():
            if key in {f.name for f in dataclasses.fields(cls) if f.init}:
                grouped.setdefault(group, {})[key] = value
                break
        else:
            raise TypeError(f"unknown data module setting {key!r}")
    builders = {**GROUPS, "augmentation": Augmentation, "split": SplitSettings}
    for group, values in grouped.items():
        if group == "preprocessing" and "modalities" in values:
            values["modalities"] = tuple(values["modalities"])
        if group == "split" and "sizes" in values:
            values["sizes"] = tuple(values["sizes"])
        kwargs[group] = builders[group](**values)
    return kwargs


def openi_datamodule(root: str | Path, **options: Any) -> FusionDataModule:
    """A data module over ``OpenIDataset(root, <source options>)`` with the other settings."""
    source_keys = {
        "layout",
        "label_names",
        "views",
        "one_image_per_report",
        "metadata_csv",
        "image_dir",
        "strip_anonymization",
        "encoding",
        "download",
    }
    source = {k: options.pop(k) for k in list(options) if k in source_keys}
    return FusionDataModule(OpenIDataset(root, **source), **_grouped(options))


def csv_datamodule(csv_path: str | Path, **options: Any) -> FusionDataModule:
    """A data module over ``CSVDataset(csv_path, <source options>)`` with the other settings."""
    source_keys = {
        "image_column",
        "text_column",
        "label_names",
        "id_column",
        "split_column",
        "group_column",
        "image_root",
        "uncertain_label",
        "encoding",
    }
    source = {k: options.pop(k) for k in list(options) if k in source_keys}
    return FusionDataModule(CSVDataset(csv_path, **source), **_grouped(options))
