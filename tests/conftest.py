"""Session-wide test settings: offline Hugging Face, one torch thread, clean LightningCLI argv."""

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


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LightningCLI(args=...) warns when pytest's own argv is also present; hide it."""
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    yield
