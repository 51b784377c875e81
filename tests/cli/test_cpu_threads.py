"""The CPU thread policy: one thread for small CPU runs, caps for large ones, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medllama_fusion.cli.main import cli_main
from medllama_fusion.cli.threads import (
    NUM_THREADS_ENV,
    SMALL_MODEL_PARAMETERS,
    apply_thread_policy,
    choose_num_threads,
)
from medllama_fusion.errors import InputError

from .conftest import cli_args

LARGE = SMALL_MODEL_PARAMETERS * 10


def test_auto_policy() -> None:
    assert choose_num_threads("auto", on_cpu=True, num_parameters=1000, default=8, cpus=8) == 1
    assert choose_num_threads("auto", on_cpu=False, num_parameters=1000, default=8) is None
    assert choose_num_threads("auto", on_cpu=False, num_parameters=LARGE, default=8) is None
    large = {"on_cpu": True, "num_parameters": LARGE, "default": 8}
    assert choose_num_threads("auto", **large, cpus=8) == 8  # type: ignore[arg-type]
    assert choose_num_threads("auto", **large, cpus=4) == 4  # type: ignore[arg-type]
    assert choose_num_threads("auto", **large, cpus=8, data_workers=6) == 2  # type: ignore[arg-type]
    assert choose_num_threads("auto", **large, cpus=2, data_workers=4) == 1  # type: ignore[arg-type]
    assert choose_num_threads(3, on_cpu=False, num_parameters=LARGE) == 3


def test_environment_wins_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    model = nn.Linear(4, 4)
    try:
        monkeypatch.setenv(NUM_THREADS_ENV, "2")
        assert apply_thread_policy("auto", on_cpu=True, model=model) == 2
        assert torch.get_num_threads() == 2
        monkeypatch.setenv(NUM_THREADS_ENV, "auto")
        assert apply_thread_policy(3, on_cpu=True, model=model) == 1
        monkeypatch.setenv(NUM_THREADS_ENV, "many")
        with pytest.raises(InputError, match=NUM_THREADS_ENV):
            apply_thread_policy("auto", on_cpu=True, model=model)
        monkeypatch.delenv(NUM_THREADS_ENV)
        with pytest.raises(InputError, match="num_threads"):
            apply_thread_policy("0", on_cpu=True, model=model)
    finally:
        torch.set_num_threads(before)


def test_cli_applies_the_policy(
    demo_root: Path, tiny_conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NUM_THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    calls: list[int] = []
    real = torch.set_num_threads

    def recording(count: int) -> None:
        calls.append(count)
        real(count)

    monkeypatch.setattr(torch, "set_num_threads", recording)
    try:
        real(2)
        extra = ("--trainer.fast_dev_run", "true")
        cli_main(cli_args("fit", tiny_conf, demo_root, tmp_path / "a", *extra))
        assert calls == [1]  # the tiny model on the CPU: one thread
        cli_main(
            cli_args("fit", tiny_conf, demo_root, tmp_path / "b", *extra, "--num_threads", "2")
        )
        assert calls == [1, 2]
    finally:
        real(before)
