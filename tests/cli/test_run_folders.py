"""Runs that do not collide: a folder per fit, and ``--ckpt_path last`` finds the right one.

The quickstart preset's own suggestion, run from a clean folder as a user would: fit the
parallel preset, fit the serial override, then ``test --ckpt_path last`` with each
configuration. (The kill -9 resume of a run in its own folder is in
``tests/trainers/test_distributed_and_resume.py``.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from medllama_fusion.cli.main import DEBUG_ENV, cli_main, main
from medllama_fusion.cli.runs import config_differences, find_runs, run_checkpoint
from medllama_fusion.demo import make_demo_dataset

SERIAL = ["--model.init_args.fusion.class_path", "SerialFusion"]


def _quickstart(root: Path, *extra: str) -> list[str]:
    return [
        "--config",
        "quickstart",
        "--data.init_args.source.init_args.root",
        str(root),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.limit_test_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder after `fit` (parallel) and `fit` with the serial override, 1 epoch each."""
    folder = tmp_path_factory.mktemp("runs")
    root = make_demo_dataset(folder / "demo_data", n_reports=40, image_size=32, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
        main(["fit", *_quickstart(root, *short)])
        main(["fit", *_quickstart(root, *short, *SERIAL)])
    return folder


def test_each_fit_has_its_own_run_folder(two_runs: Path) -> None:
    runs = find_runs(two_runs / "outputs" / "quickstart")
    assert [run.version for run in runs] == [1, 0]  # newest first
    serial, parallel = runs
    assert parallel.config["model"]["init_args"]["fusion"]["class_path"].endswith("ParallelFusion")
    assert serial.config["model"]["init_args"]["fusion"]["class_path"].endswith("SerialFusion")
    for run in runs:  # each folder holds only its own checkpoints
        assert run_checkpoint(run.folder) == run.folder / "checkpoints" / "last.ckpt"
        names = sorted(p.name for p in (run.folder / "checkpoints").iterdir())
        assert not [n for n in names if re.search(r"-v\d+\.ckpt$", n)], names
    differences = config_differences(parallel.config, serial.config)
    assert any("fusion.class_path" in line for line in differences)


@pytest.mark.parametrize(("override", "fusion"), [([], "ParallelFusion"), (SERIAL, "SerialFusion")])
def test_ckpt_path_last_tests_the_run_of_this_configuration(
    two_runs: Path,
    override: list[str],
    fusion: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(two_runs)
    root = two_runs / "demo_data"
    cli = cli_main(["test", *_quickstart(root, *override), "--ckpt_path", "last"])
    assert type(cli.model.fusion).__name__ == fusion
    version = 0 if fusion == "ParallelFusion" else 1
    expected = Path("outputs/quickstart") / f"version_{version}" / "checkpoints" / "last.ckpt"
    assert f"--ckpt_path last is {expected}" in capsys.readouterr().out
    assert cli.model.test_report is not None


def test_another_configuration_gets_one_message(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    root = two_runs / "demo_data"
    args = _quickstart(root, "--model.init_args.fusion.class_path", "MixedFusion")
    with pytest.raises(SystemExit) as stopped:
        main(["test", *args, "--ckpt_path", "last"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "no run under outputs/quickstart has this configuration" in err
    assert "outputs/quickstart/version_1, differs in:" in err  # the newest run, named
    assert (
        "fusion.SerialFusion' in the run, 'medllama_fusion.models.fusion.MixedFusion' here" in err
    )
    assert "--run outputs/quickstart/version_1" in err  # how to choose


def test_run_points_at_another_run(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    root = two_runs / "demo_data"
    run = "outputs/quickstart/version_1"
    cli = cli_main(["test", *_quickstart(root), "--ckpt_path", "last", "--run", run])
    assert type(cli.model.fusion).__name__ == "SerialFusion"  # the checkpoint's model


def test_no_run_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    root = make_demo_dataset(tmp_path / "demo", n_reports=12, image_size=32, seed=6)
    with pytest.raises(SystemExit) as stopped:
        main(["predict", *_quickstart(root), "--ckpt_path", "last"])
    assert stopped.value.code == 2
    assert "there is no run under outputs/quickstart yet" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "outputs" / "quickstart" / "predict")


def test_run_and_a_checkpoint_file_together_are_refused(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    run = "outputs/quickstart/version_1"
    args = _quickstart(two_runs / "demo_data")
    with pytest.raises(SystemExit) as stopped:
        main(["test", *args, "--run", run, "--ckpt_path", f"{run}/checkpoints/last.ckpt"])
    assert stopped.value.code == 2
    assert "both name a checkpoint" in capsys.readouterr().err


def test_the_checkpoints_model_settings_are_announced(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_runs)
    ckpt = "outputs/quickstart/version_1/checkpoints/last.ckpt"  # the serial run, LoRA r=8
    args = _quickstart(two_runs / "demo_data", "--model.init_args.fusion.init_args.lora.r", "4")
    cli = cli_main(["test", *args, "--ckpt_path", ckpt])
    assert cli.model.fusion.lora_modules  # the checkpoint's model was built and tested
    out = capsys.readouterr().out
    assert "the checkpoint's model settings replace the configuration's:" in out
    assert "fusion.init_args.lora.r: 8 in the checkpoint, 4 in the configuration" in out
    assert "SerialFusion' in the checkpoint" in out


def test_a_fit_stopped_by_an_input_error_leaves_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    empty = tmp_path / "not_openi"
    (empty / "sub").mkdir(parents=True)  # not empty, no data: the demo is not written there
    with pytest.raises(SystemExit):
        main(["fit", *_quickstart(empty)])
    capsys.readouterr()
    root = make_demo_dataset(tmp_path / "demo", n_reports=12, image_size=32, seed=9)
    main(
        [
            "fit",
            *_quickstart(root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"),
        ]
    )
    assert (tmp_path / "outputs" / "quickstart" / "version_0" / "config.yaml").is_file()
