"""Two CPU processes (gloo DDP): exact evaluation on odd-sized sets and a DDP fit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
)


def _run(out: Path, devices: int) -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), "contract", str(out), str(devices)],
        capture_output=True, text=True, env=ENV, timeout=600, cwd=out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / f"contract{devices}.json").read_text())


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.slow
def test_ddp_odd_sets_count_every_sample_once_and_fit_keeps_ranks_equal(tmp_path: Path) -> None:
    single = _run(tmp_path, 1)
    double = _run(tmp_path, 2)
    assert single["n_val"] == double["n_val"] == 23  # odd: the sampler pads rank 1 with a repeat
    for key, value in single["val"].items():
        assert _same(value, double["val"][key]), (key, value, double["val"][key])
    assert {"val/loss", "val/auroc", "val/auroc/a"} <= set(single["val"])
    for key in ("auroc", "ci_low", "ci_high", "mean_ci", "positives"):
        assert all(map(_same, single["test"][key], double["test"][key])), key
    assert _same(single["test"]["mean"], double["test"]["mean"])
    assert not math.isnan(single["test"]["mean_ci"][0])
    assert single["test"]["num_clusters"] == double["test"]["num_clusters"] == 12

    # OperatingPoints reads the classifier's gathered rows: same thresholds on 1 and 2 processes
    for run in (single, double):
        assert list(run["thresholds"].values()) == pytest.approx(run["thresholds_from_rows"])
    assert list(single["thresholds"]) == ["a", "b", "c"]
    assert list(double["thresholds"].values()) == pytest.approx(
        list(single["thresholds"].values()), abs=1e-6
    )

    # without `index` the repeated row is counted (24 rows) and a warning says so under DDP
    assert single["n_val_without_index"] == 23 and not single["warned_without_index"]
    assert double["n_val_without_index"] == 24 and double["warned_without_index"]

    # DDP fit: 3 steps taken, trainable weights moved and are identical on both ranks
    assert double["global_step"] == 3
    rank0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert rank0["after"].keys() == rank1["after"].keys() and rank0["after"]
    moved = [n for n in rank0["after"] if not torch.equal(rank0["after"][n], rank0["before"][n])]
    assert len(moved) == len(rank0["after"]), "every trainable tensor changes"
    for name, value in rank0["after"].items():
        assert torch.equal(value, rank1["after"][name]), name
