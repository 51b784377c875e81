"""Session-wide test settings: offline Hugging Face, one torch thread, workers, clean argv."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

# Tests never reach the Hugging Face Hub: everything they load is made locally or installed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The test models are tiny: one torch thread per process is as fast and does not collapse when
# several processes (DDP ranks, subprocess tests, other jobs) share a few cores. Subprocesses
# inherit these; set MEDLLAMA_FUSION_NUM_THREADS to use more.
os.environ.setdefault("MEDLLAMA_FUSION_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["MEDLLAMA_FUSION_NUM_THREADS"])

import torch  # after OMP_NUM_THREADS

torch.set_num_threads(int(os.environ["MEDLLAMA_FUSION_NUM_THREADS"]))


MAX_WORKERS = 8
"""More pytest-xdist workers gain little: the slowest single tests then set the suite's time."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per CPU this process may use, at most :data:`MAX_WORKERS`.

    pytest-xdist's own count is the machine's physical cores when psutil is installed (1 on a
    2-vCPU machine with hyperthreading); one-thread test processes can use every CPU the
    process may run on.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, MAX_WORKERS))


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LightningCLI(args=...) warns when pytest's own argv is also present; hide it."""
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    yield
