"""The default training step never waits for the device (no ``.item()``, no ``bool()``, ...).

A host/device sync stalls the GPU queue. On a CPU test machine nothing stalls, so the test
records the operations that would sync on a GPU while the parts of a training step run that
should not sync: ``training_step``, ``backward``, ``on_before_optimizer_step``, the progress
bar's ``on_train_batch_end`` and the logger connector's per-batch work. The optimizer step
itself is left out (AdamW reads its step counter, a host tensor, with ``.item()``).

A tensor copied to the host with ``.cpu()`` (itself recorded as a sync) becomes a
:class:`HostTensor`; reading it later (the progress bar converts its values with ``.item()`` at
every refresh) is not a device sync and is not recorded. ``.to(device)`` is not recorded: on
a CPU machine it cannot be told apart from moving a batch to the model's device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from medllama_fusion.trainers import FusionClassifier

from .helpers import ContractDataModule, tiny_fusion

aten = torch.ops.aten


class HostTensor(torch.Tensor):
    """A tensor already copied to the host: reading its value does not wait for a device."""


SYNC_METHODS: dict[Any, str] = {
    torch.Tensor.item: ".item()",
    torch.Tensor.__bool__: "bool()",
    torch.Tensor.__float__: "float()",
    torch.Tensor.__int__: "int()",
    torch.Tensor.__index__: "index()",
    torch.Tensor.tolist: ".tolist()",
    torch.Tensor.numpy: ".numpy()",
    torch.Tensor.cpu: ".cpu()",
}
"""Python-level reads of a tensor's value (``.tolist``/``.numpy`` never reach the dispatcher)."""

SYNC_OPS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.masked_select.default,
}
"""ATen operators that wait for the device (what ``.item()``, ``bool()``, masks dispatch to)."""


def _is_host(value: Any) -> bool:
    return isinstance(value, HostTensor)


class SyncRecorder(TorchFunctionMode):
    """Record host/device syncs while :attr:`where` is set (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.where: str | None = None
        self.step = -1
        self.events: list[tuple[int, str, str]] = []
        self.dispatch = _DispatchRecorder(self)

    def record(self, what: str) -> None:
        if self.where is not None:
            self.events.append((self.step, self.where, what))

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        name = SYNC_METHODS.get(func)
        host = bool(args) and _is_host(args[0])
        if name is not None and not host:
            self.record(name)
        out = func(*args, **kwargs)
        if func is torch.Tensor.cpu and isinstance(out, torch.Tensor):
            out = out.as_subclass(HostTensor)
        return out

    def watch(self, owner: Any, method: str) -> None:
        """Record syncs while ``owner.method`` runs (the instance attribute shadows the class')."""
        original: Callable[..., Any] = getattr(owner, method)
        label = f"{type(owner).__name__}.{method}"

        @functools.wraps(original)
        def watched(*args: Any, **kwargs: Any) -> Any:
            if method == "training_step":
                self.step = int(args[1])
            outer, self.where = self.where, label
            try:
                with self, self.dispatch:
                    return original(*args, **kwargs)
            finally:
                self.where = outer

        setattr(owner, method, watched)


class _DispatchRecorder(TorchDispatchMode):
    """The ATen half of :class:`SyncRecorder` (syncs inside C++ ops such as mask indexing)."""

    def __init__(self, recorder: SyncRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in SYNC_OPS and not (args and _is_host(args[0])):
            self.recorder.record(str(func))
        elif func is aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        ):
            self.recorder.record("boolean mask indexing")
        return func(*args, **kwargs)


def _fit_recording(
    tmp_path: Path, max_steps: int, log_every_n_steps: int, bar: Callback | None = None
) -> tuple[SyncRecorder, dict[int, dict[str, Any]]]:
    """Fit the library defaults for ``max_steps`` on CPU; return the syncs and the bar per step.

    ``bar`` replaces Lightning's default progress bar (Rich when installed, else TQDM).
    """
    model = FusionClassifier(tiny_fusion(), label_names=["a", "b", "c"])
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=log_every_n_steps,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[bar] if bar is not None else None,
    )
    recorder = SyncRecorder()
    for method in ("training_step", "backward", "on_before_optimizer_step"):
        recorder.watch(model, method)
    bar = trainer.progress_bar_callback
    assert bar is not None, "the default progress bar is enabled"
    recorder.watch(bar, "on_train_batch_end")
    recorder.watch(trainer._logger_connector, "on_batch_end")
    recorder.watch(trainer._logger_connector, "update_train_step_metrics")
    shown: dict[int, dict[str, Any]] = {}
    show = bar.on_train_batch_end

    def show_and_keep(*args: Any, **kwargs: Any) -> None:
        show(*args, **kwargs)
        shown[int(args[-1])] = dict(trainer.progress_bar_metrics)  # what the bar shows

    bar.on_train_batch_end = show_and_keep  # type: ignore[method-assign]
    trainer.fit(model, datamodule=ContractDataModule(n_train=16, batch_size=4))
    return recorder, shown


@pytest.mark.parametrize("bar", [None, TQDMProgressBar()], ids=["default_bar", "tqdm"])
def test_default_training_step_never_syncs(tmp_path: Path, bar: Callback | None) -> None:
    recorder, _ = _fit_recording(tmp_path, max_steps=3, log_every_n_steps=50, bar=bar)
    assert recorder.events == [], "\n".join(map(str, recorder.events))


def test_logging_steps_sync_once_and_the_bar_keeps_the_loss(tmp_path: Path) -> None:
    recorder, shown = _fit_recording(tmp_path, max_steps=4, log_every_n_steps=2)
    steps = {step for step, _, _ in recorder.events}
    assert steps == {1, 3}, recorder.events  # Lightning logs at steps 2 and 4 (1-based)
    assert ("FusionClassifier.training_step", ".cpu()") in {
        (where, what) for _, where, what in recorder.events
    }
    assert "loss" not in shown[0]
    assert shown[2]["loss"] == shown[1]["loss"]  # the last value stays in the bar
    assert shown[3]["loss"] != shown[1]["loss"]


@pytest.mark.parametrize("interval", [0, -1, 1.5])
def test_nonfinite_check_interval_is_checked(interval: Any) -> None:
    with pytest.raises(ValueError, match="nonfinite_check_interval"):
        FusionClassifier(tiny_fusion(), nonfinite_check_interval=interval)
