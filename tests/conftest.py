"""Session-wide test settings: offline Hugging Face, clean argv for LightningCLI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

# Tests never reach the Hugging Face Hub: everything they load is made locally or installed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LightningCLI(args=...) warns when pytest's own argv is also present; hide it."""
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    yield
