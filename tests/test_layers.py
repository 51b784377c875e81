"""The import contracts of pyproject.toml hold: no module imports up a layer, no cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (it is in the test extras)")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [command, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


def test_import_contracts_hold() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_import_up_a_layer_breaks_the_contract(tmp_path: Path) -> None:
    """The contract is not vacuous: a data module importing the CLI is reported."""
    package = tmp_path / "src" / "medllama_fusion"
    shutil.copytree(ROOT / "src" / "medllama_fusion", package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = package / "data" / "splits.py"
    target.write_text(target.read_text() + "\nimport medllama_fusion.cli.runs  # noqa\n")
    command = shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (it is in the test extras)")
    env = {"PYTHONPATH": str(tmp_path / "src"), "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [command], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode != 0
    assert "medllama_fusion.data.splits -> medllama_fusion.cli.runs" in result.stdout
