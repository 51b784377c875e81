from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import CONF, cli_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The checkout's src/ first (so subprocesses import this copy of the package), then the repository
# root (for the test-only callbacks in tests.trainers.helpers).
ENV = dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    OMP_NUM_THREADS="1",
)


def _metrics(tmp: Path, devices: str, root: Path) -> dict[str, float]:
    out = tmp / f"dev{devices}"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "ddp_script.py"),
            str(CONF / "tiny.yaml"),
            str(root),
            str(out),
            devices,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=tmp,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_two_cpu_processes_gather_metrics(demo_root: Path, tmp_path: Path) -> None:
    single = _metrics(tmp_path, "1", demo_root)
    assert single["n_val"] % 2 == 0, "even val set: DistributedSampler adds no duplicates"
    double = _metrics(tmp_path, "2", demo_root)
    # A Gloo group left to interpreter shutdown can abort the process after the work is done.
    assert double.pop("process_group_left_open") == 0.0, "the CLI closes its process group"
    assert single.pop("process_group_left_open") == 0.0
    keys = [k for k in single if k.startswith("val/auroc")]
    assert len(keys) == 15
    for key in keys:
        a, b = single[key], double[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6), key


def _resume_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medllama_fusion",
        *cli_args(
            "fit",
            CONF / "resume.yaml",
            root,
            out,
            *extra,
        ),
    ]


@pytest.mark.slow
def test_resume_mid_epoch_after_kill_matches_uninterrupted(demo_root: Path, tmp_path: Path) -> None:
    """SIGKILL in epoch 1 after a mid-epoch last.ckpt, resume with --ckpt_path last: same run."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir()
    killed.mkdir()
    result = subprocess.run(
        _resume_cmd(demo_root, full), capture_output=True, text=True, env=ENV, timeout=300, cwd=full
    )
    assert result.returncode == 0, result.stderr[-4000:]

    # The interrupted run reads with 2 worker processes: batches must not depend on that.
    progress, resumed_progress = killed / "progress.txt", killed / "resumed.txt"
    workers = ("--data.init_args.loader.num_workers", "2")
    proc = subprocess.Popen(
        _resume_cmd(
            demo_root,
            killed,
            *workers,
            "--trainer.callbacks+=tests.trainers.helpers.Progress",
            f"--trainer.callbacks.path={progress}",
            "--trainer.callbacks.delay=0.5",
        ),
        env=ENV,
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # steps 2, 4, 6, 8 wrote last.ckpt; step 8 = epoch 1 batch 2 (5 batches per epoch)
        # Wait for the run to get there however long it takes (pytest's timeout bounds it).
        while not (progress.is_file() and "epoch 1 batch 3" in progress.read_text()):
            assert proc.poll() is None, proc.stderr.read()[-4000:] if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    n_train = len((demo_root / "train.csv").read_text().splitlines()) - 1
    run = killed / "resume" / "version_0"  # the run folder of this fit
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 8
    [loader_state] = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    snapshot = loader_state["_snapshot"]  # torchdata StatefulDataLoader state, 2 workers
    assert snapshot["_snapshot_step"] == 3
    assert snapshot["_main_snapshot"]["_sampler_iter_state"]["sampler_state"] == {
        "yielded": 3 * 8,
        "epoch": 1,
        "seed": 0,
        "num_samples": n_train,
        "num_replicas": 1,
    }

    result = subprocess.run(
        _resume_cmd(
            demo_root,
            killed,
            *workers,
            "--ckpt_path",
            "last",
            "--trainer.callbacks+=tests.trainers.helpers.Progress",
            f"--trainer.callbacks.path={resumed_progress}",
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=killed,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "not resumable" not in result.stderr
    assert resumed_progress.read_text().splitlines()[0] == "epoch 1 batch 3"  # really resumed
    assert f"run folder {run.resolve()}" in result.stdout  # in its own folder
    assert sorted(p.name for p in (killed / "resume").iterdir()) == ["version_0"]

    def rows(out: Path) -> list[dict[str, str]]:
        lines = sorted(out.rglob("metrics.csv"))[-1].read_text().splitlines()
        header = lines[0].split(",")
        return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]

    def losses(out: Path) -> dict[int, float]:
        return {int(r["step"]): float(r["train/loss"]) for r in rows(out) if r["train/loss"]}

    a, b = rows(full), rows(killed)
    last_a = [r for r in a if r["val/auroc"]][-1]
    last_b = [r for r in b if r["val/auroc"]][-1]
    assert last_a["epoch"] == last_b["epoch"] == "2"
    for key in ("val/auroc", "val/loss", "val/auroc/Cardiomegaly"):
        assert float(last_a[key]) == pytest.approx(float(last_b[key]), abs=1e-6), key
    after = {step: loss for step, loss in losses(full).items() if step >= 8}
    assert sorted(losses(killed)) == sorted(after) and len(after) == 7
    for step, loss in losses(killed).items():
        assert loss == pytest.approx(after[step], abs=1e-6), step


def _quickstart_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    """The quickstart preset cut to 2 epochs of 4 batches, with a last.ckpt every 2 steps."""
    return [
        sys.executable,
        "-m",
        "medllama_fusion",
        *cli_args(
            "fit",
            Path("quickstart"),
            root,
            out,
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "4",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=2",
            "--trainer.callbacks.save_top_k=0",
            "--trainer.callbacks.save_last=true",
            *extra,
        ),
    ]


def _newest_last(out: Path) -> Path:
    """The checkpoint ``--ckpt_path last`` picks: the ``last.ckpt`` of the quickstart's run."""
    (run,) = (out / "quickstart").glob("version_*")  # one run: the resume continues it
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_quickstart_preset_resumes_with_ckpt_path_last(demo_root: Path, tmp_path: Path) -> None:
    """kill -9 mid-epoch, then ``--ckpt_path last`` through the same preset: same final weights."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    result = subprocess.run(
        _quickstart_cmd(demo_root, full),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"run folder {(full / 'quickstart' / 'version_0').resolve()}" in result.stdout

    progress, resumed_progress = tmp_path / "progress.txt", tmp_path / "resumed.txt"
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            _quickstart_cmd(
                demo_root,
                killed,
                "--trainer.callbacks+=tests.trainers.helpers.Progress",
                f"--trainer.callbacks.path={progress}",
                "--trainer.callbacks.delay=0.5",
            ),
            env=ENV,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:  # after batch 1 of epoch 1 (global step 6) a last.ckpt was written; batch 2 is running
        while not (progress.is_file() and "epoch 1 batch 2" in progress.read_text()):
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = torch.load(_newest_last(killed), map_location="cpu", weights_only=False)
    step = saved["global_step"]
    assert 4 < step < 8, "the newest checkpoint is from the middle of epoch 1"

    result = subprocess.run(
        _quickstart_cmd(
            demo_root,
            killed,
            "--ckpt_path",
            "last",
            "--trainer.callbacks+=tests.trainers.helpers.Progress",
            f"--trainer.callbacks.path={resumed_progress}",
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no last checkpoint available" not in result.stderr
    lines = resumed_progress.read_text().splitlines()
    assert lines[0] == f"epoch 1 batch {step - 4}"  # continued from the saved step, not step 0
    assert len(lines) == 8 - step

    a = torch.load(_newest_last(full), map_location="cpu", weights_only=True)
    b = torch.load(_newest_last(killed), map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "medllama_fusion", *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_two_process_test_of_a_checkpoint_writes_the_same_report(
    demo_root: Path, tmp_path: Path
) -> None:
    """``test --ckpt_path FILE --trainer.devices 2`` (its config read from the checkpoint).

    Every rank must take part in the same collectives (the report folder is one), the other
    processes get the stored configuration on their command line, and the table of the two
    processes equals the one-process table: each sample is counted once.
    """
    fit = _console(*cli_args("fit", CONF / "tiny.yaml", demo_root, tmp_path / "fit"), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (checkpoint,) = (tmp_path / "fit").rglob("last.ckpt")
    tables = {}
    for devices in ("1", "2"):
        out = tmp_path / f"test{devices}"
        result = _console(
            "test",
            "--ckpt_path",
            str(checkpoint),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.devices",
            devices,
            "--trainer.strategy",
            "ddp" if devices == "2" else "auto",
            "--trainer.limit_test_batches",
            "1.0",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("Test AUROC (") == 1, "one table, printed by rank 0"
        (table,) = out.rglob("test_auroc.csv")
        tables[devices] = table.read_text()
    assert tables["2"] == tables["1"]
