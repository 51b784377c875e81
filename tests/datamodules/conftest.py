"""Shared fixtures: a tiny demo dataset generated once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medllama_fusion.demo import make_demo_dataset


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_reports=40, image_size=32, seed=3)


@pytest.fixture
def demo_root(demo_template: Path, tmp_path: Path) -> Path:
    """A private copy that a test may modify."""
    return Path(shutil.copytree(demo_template, tmp_path / "demo"))
