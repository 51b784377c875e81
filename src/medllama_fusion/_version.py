"""The installed version, read from the package metadata (``version`` in ``pyproject.toml``)."""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "version"]

DISTRIBUTION = "medllama-fusion"
"""The distribution name on PyPI."""


def version() -> str:
    """Return the installed version of medllama-fusion.

    ``pyproject.toml`` is the one place the version is written; an install (from PyPI, a wheel,
    the sdist or ``pip install -e .`` in a clone) records it in the package metadata. Source files
    on ``sys.path`` without an install report ``0+unknown``.
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
