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

from .conftest import CONF, cli_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _metrics(tmp: Path, devices: str, root: Path) -> dict[str, float]:
    out = tmp / f"dev{devices}"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), str(CONF / "tiny.yaml"), str(root),
         str(out), devices],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_two_cpu_processes_gather_metrics(demo_root: Path, tmp_path: Path) -> None:
    single = _metrics(tmp_path, "1", demo_root)
    assert single["n_val"] % 2 == 0, "even val set: DistributedSampler adds no duplicates"
    double = _metrics(tmp_path, "2", demo_root)
    keys = [k for k in single if k.startswith("val/auroc")]
    assert len(keys) == 15
    for key in keys:
        a, b = single[key], double[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6), key


def _resume_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medllama_fusion",
            *cli_args("fit", CONF / "resume.yaml", root, out,
                      "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                      "--trainer.logger.save_dir", str(out), *extra)]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(demo_root: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    result = subprocess.run(_resume_cmd(demo_root, full), capture_output=True, text=True,
                            env=ENV, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    killed = tmp_path / "killed"
    progress = killed / "progress.txt"
    proc = subprocess.Popen(
        _resume_cmd(demo_root, killed, "--trainer.callbacks+=tests.trainers.helpers.Progress",
                    f"--trainer.callbacks.path={progress}", "--trainer.callbacks.delay=0.5"),
        env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill in epoch 1, after the epoch-0 checkpoint exists
            if progress.is_file() and "epoch 1 batch 2" in progress.read_text():
                break
            assert proc.poll() is None, proc.stderr.read()[-4000:] if proc.stderr else ""
            time.sleep(0.2)
        else:
            pytest.fail("the run never reached epoch 1")
        assert list(killed.rglob("last.ckpt"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.run(_resume_cmd(demo_root, killed, "--ckpt_path", "last"),
                            capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    def final(out: Path) -> dict[str, str]:
        rows = sorted(out.rglob("metrics.csv"))[-1].read_text().splitlines()
        header = rows[0].split(",")
        last_val = [r.split(",") for r in rows[1:] if r.split(",")[header.index("val/auroc")]]
        return dict(zip(header, last_val[-1], strict=False))

    a, b = final(full), final(killed)
    assert a["epoch"] == b["epoch"] == "2"
    for key in ("val/auroc", "val/loss", "val/auroc/Cardiomegaly"):
        assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
