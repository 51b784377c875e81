"""Lightning's FSDPStrategy on 2 CPU processes (gloo) trains like DDP, identically on both ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn import Module

from .conftest import CONF, cli_args

REPO = Path(__file__).resolve().parents[2]
ENV = dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    OMP_NUM_THREADS="1",
)


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy, allowed on CPU for this test.

    Lightning refuses ``strategy="fsdp"`` without a GPU (its guard checks the exact type, so a
    subclass passes), and passes ``device_id=None`` on CPU, which torch's FSDP rejects; here the
    model is wrapped with ``device_id=cpu`` and Lightning's own setup then runs unchanged.
    """

    def _setup_model(self, model: Module) -> Module:
        if not any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
            model = FullyShardedDataParallel(
                model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        return super()._setup_model(model)


class RecordTrainable(Callback):
    """Save every rank's full trainable tensors at the start and end of training."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _save(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        def trainable() -> dict[str, torch.Tensor]:
            return {
                name: param.detach().clone()
                for name, param in pl_module.named_parameters()
                if param.requires_grad
            }

        model = trainer.strategy.model
        self.path.mkdir(parents=True, exist_ok=True)
        wrapper = type(model).__name__
        (self.path / f"wrapper_rank{trainer.global_rank}.txt").write_text(wrapper)
        if isinstance(model, FullyShardedDataParallel):
            with FullyShardedDataParallel.summon_full_params(model, writeback=False):
                tensors = trainable()
        else:
            tensors = trainable()
        torch.save(tensors, self.path / f"{stage}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module, "start")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module, "end")


def _fit(root: Path, out: Path, strategy: str, wrapper: str) -> dict[str, dict[str, Any]]:
    out.mkdir()
    if strategy == "fsdp":
        config = out / "strategy.yaml"
        config.write_text(
            f"trainer:\n  strategy:\n    class_path: {__name__}.{CPUFSDPStrategy.__name__}\n"
        )
        strategy_args = ["--config", str(config)]
    else:
        strategy_args = ["--trainer.strategy", strategy]
    command = [
        sys.executable,
        "-m",
        "medllama_fusion",
        *cli_args(
            "fit",
            CONF / "tiny.yaml",
            root,
            out,
            *strategy_args,
            "--trainer.devices",
            "2",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.callbacks+=tests.trainers.test_fsdp.RecordTrainable",
            f"--trainer.callbacks.path={out / 'weights'}",
        ),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, cwd=out)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        assert (out / "weights" / f"wrapper_rank{rank}.txt").read_text() == wrapper
    return {
        file.stem: torch.load(file, map_location="cpu") for file in (out / "weights").glob("*.pt")
    }


def _assert_close(a: dict[str, Any], b: dict[str, Any], atol: float) -> None:
    assert sorted(a) == sorted(b) and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


@pytest.mark.slow
def test_fsdp_fit_on_two_cpu_processes_matches_ddp(demo_root: Path, tmp_path: Path) -> None:
    fsdp = _fit(demo_root, tmp_path / "fsdp", "fsdp", "FullyShardedDataParallel")
    ddp = _fit(demo_root, tmp_path / "ddp", "ddp", "DistributedDataParallel")
    assert sorted(fsdp) == sorted(ddp) == ["end_rank0", "end_rank1", "start_rank0", "start_rank1"]
    _assert_close(fsdp["end_rank0"], fsdp["end_rank1"], atol=0)  # one model, gathered on each rank
    _assert_close(fsdp["start_rank0"], ddp["start_rank0"], atol=0)
    moved = [n for n, t in fsdp["end_rank0"].items() if not torch.equal(t, fsdp["start_rank0"][n])]
    assert len(moved) == len(fsdp["end_rank0"])  # every trainable tensor was updated
    _assert_close(fsdp["end_rank0"], ddp["end_rank0"], atol=1e-5)  # same averaged updates
