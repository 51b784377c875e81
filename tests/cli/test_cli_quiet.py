"""The command line says only what concerns the user's run, and starts without the model stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medllama_fusion.cli.console import SUBCOMMANDS

# Warning lines that describe the user's own run, so they must stay visible:
RUN_SPECIFIC = (
    # The data module reports classes with few positives in the user's splits.
    "classes with fewer than",
    # An evaluated set (here a 2-batch cut) without positives or negatives for some class.
    "AUROC is undefined",
)
_WARNING = re.compile(r"warn", re.IGNORECASE)


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDLLAMA_FUSION_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _warning_lines(stderr: str) -> list[str]:
    """Lines mentioning a warning, less the run-specific ones and their source-code lines."""
    kept: list[str] = []
    skipping = False
    for line in stderr.splitlines():
        if skipping and line.startswith(" "):  # the source line Python prints under a warning
            continue
        skipping = any(text in line for text in RUN_SPECIFIC)
        if not skipping and _WARNING.search(line):
            kept.append(line)
    return kept


def _imported(importtime_stderr: str) -> set[str]:
    """Module names listed by ``python -X importtime`` (the other lines are the real stderr)."""
    lines = importtime_stderr.splitlines()
    return {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}


def _without_importtime(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


def test_help_is_quiet_and_skips_the_model_stack() -> None:
    """``medllama-fusion --help`` lists every subcommand and preset without torch or Lightning;
    ``fit --help`` (LightningCLI) prints no warning either."""
    result = _run("-X", "importtime", "-m", "medllama_fusion", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "{" + ",".join(SUBCOMMANDS) + "}",
        "paper/parallel_r2",
        "quickstart",
    ):
        assert name in result.stdout
    assert _without_importtime(result.stderr).strip() == ""
    assert not {"torch", "lightning", "peft", "bitsandbytes"} & _imported(result.stderr)
    bare = _run("-m", "medllama_fusion")
    assert bare.returncode == 2 and "choose a subcommand" in bare.stderr
    fit_help = _run("-m", "medllama_fusion", "fit", "--help")
    assert fit_help.returncode == 0, fit_help.stderr[-3000:]
    assert "--config" in fit_help.stdout and "--trainer" in fit_help.stdout
    assert _warning_lines(fit_help.stderr) == []


def test_preset_listing_does_not_import_torch() -> None:
    result = _run("-X", "importtime", "-m", "medllama_fusion.configs")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paper/parallel_r2" in result.stdout and "quickstart" in result.stdout
    imported = _imported(result.stderr)
    assert "torch" not in imported and "lightning" not in imported
    assert _without_importtime(result.stderr).strip() == ""


def test_lazy_exports_resolve() -> None:
    """Every public name of the package resolves (``import medllama_fusion`` itself is light:
    the preset listing above runs it without importing torch)."""
    import medllama_fusion

    for name in medllama_fusion.__all__:
        assert getattr(medllama_fusion, name) is not None, name
    assert set(medllama_fusion.__all__) <= set(dir(medllama_fusion))
    assert medllama_fusion.models.FusionModel is medllama_fusion.FusionModel
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = medllama_fusion.nope


@pytest.mark.slow
def test_tiny_quickstart_fit_prints_no_warnings(tmp_path: Path) -> None:
    result = _run(
        "-m",
        "medllama_fusion",
        "fit",
        "--config",
        "quickstart",
        "--data.init_args.source.init_args.root",
        str(tmp_path / "demo_data"),
        "--trainer.default_root_dir",
        str(tmp_path / "outputs"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _warning_lines(result.stderr), result.stderr[-3000:]
    # The trainable parameters come as a table, not a dict dump.
    assert "Trainable parameters:" in result.stderr and "| lora " in result.stderr
    assert "trainable parameters: {" not in result.stderr
    # The end-of-fit table names its epoch and the checkpoint holding those weights.
    checkpoints = tmp_path / "outputs" / "quickstart" / "version_0" / "checkpoints"
    assert f"epoch=0, the last validated epoch; checkpoint {checkpoints / 'last.ckpt'}" in (
        result.stdout
    )
    assert "Best checkpoint by val/auroc (" in result.stdout


def test_parameter_report_table() -> None:
    from medllama_fusion.models import format_parameter_report

    report = {
        "trainable": 300,
        "total": 1300,
        "groups": {
            "backbone": {"trainable": 0, "total": 1000},
            "lora": {"trainable": 200, "total": 200},
            "head": {"trainable": 100, "total": 100},
        },
    }
    lines = format_parameter_report(report).splitlines()
    assert lines[0] == "Trainable parameters: 300 of 1,300 (23.08%)"
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in lines[3:]}
    assert [c.strip() for c in rows["backbone"]] == ["0", "1,000", "0.00%", "0.00%"]
    assert [c.strip() for c in rows["lora"]] == ["200", "200", "100.00%", "66.67%"]
    assert [c.strip() for c in rows["total"]] == ["300", "1,300", "23.08%", "100.00%"]


def test_num_threads_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medllama_fusion.cli.main import NUM_THREADS_ENV, set_num_threads_from_env
    from medllama_fusion.errors import InputError

    before = torch.get_num_threads()
    monkeypatch.delenv(NUM_THREADS_ENV, raising=False)
    assert set_num_threads_from_env() is None
    monkeypatch.setenv(NUM_THREADS_ENV, "two")
    with pytest.raises(InputError, match=NUM_THREADS_ENV):
        set_num_threads_from_env()
    monkeypatch.setenv(NUM_THREADS_ENV, "1")
    try:
        assert set_num_threads_from_env() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
