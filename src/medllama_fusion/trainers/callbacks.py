"""Lightning callbacks: prediction CSV writer and per-epoch/per-batch reseeding (exact resume)."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

__all__ = [
    "RUN_CONFIG_KEY",
    "EpochSeed",
    "PredictionCSVWriter",
    "RunConfigInCheckpoint",
    "batch_seed",
]


class PredictionCSVWriter(BasePredictionWriter):
    """Write per-label probabilities with example ids to a CSV at the end of ``predict``.

    Columns: ``id`` then one column per label name of the module (``label_<i>`` if it has none),
    then ``<label>_decision`` (0/1) per label when the batches carry ``decisions``
    (:class:`~medllama_fusion.trainers.operating_points.OperatingPoints` with thresholds), then,
    when the predicted data has labels (the batches carry ``target``), the true labels as
    ``<label>_target`` (0/1) per label and the report group of each row as ``group``: what
    ``medllama-fusion compare`` needs to compare two models' files. With several processes each
    rank writes ``<stem>.rank<r>.csv``. Each process prints the path of the file it wrote.

    Args:
        path: Output file; defaults to ``<log_dir>/predictions.csv``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path
        self.written: Path | None = None

    def _target(self, trainer: Trainer) -> Path:
        base = (
            Path(self.path)
            if self.path
            else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        )
        if trainer.world_size > 1:
            base = base.with_name(f"{base.stem}.rank{trainer.global_rank}{base.suffix}")
        return base

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write all prediction batches of this process to the CSV."""
        nested = bool(predictions) and isinstance(predictions[0], list)
        batches = predictions[0] if nested else predictions
        names = list(getattr(pl_module, "label_names", []))
        path = self._target(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            header_written = False
            for out in batches:
                probs = out["probs"].float().cpu()
                decisions = out.get("decisions")  # 0/1 at the OperatingPoints thresholds
                target = out.get("target")  # 0/1 labels, when the data has them
                if not header_written:
                    names = names or [f"label_{i}" for i in range(probs.shape[1])]
                    extra = [f"{n}_decision" for n in names] if decisions is not None else []
                    if target is not None:
                        extra += [*(f"{n}_target" for n in names), "group"]
                    writer.writerow(["id", *names, *extra])
                    header_written = True
                ids = out["ids"] or [str(i) for i in range(len(probs))]
                columns = [[f"{p:.6f}" for p in row] for row in probs.tolist()]
                if decisions is not None:
                    flags = decisions.cpu().tolist()
                    columns = [[*c, *f] for c, f in zip(columns, flags, strict=True)]
                if target is not None:
                    groups = out.get("group_index")
                    group = groups.cpu().tolist() if groups is not None else [""] * len(probs)
                    labels = target.long().cpu().tolist()
                    rows = zip(columns, labels, group, strict=True)
                    columns = [[*c, *t, g] for c, t, g in rows]
                for example_id, row in zip(ids, columns, strict=False):
                    writer.writerow([example_id, *row])
        self.written = path
        print(f"medllama-fusion: predictions written to {path.resolve()}", flush=True)


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """Return the seed :class:`EpochSeed` uses for one training batch (a 32-bit integer).

    Args:
        seed: Base seed.
        epoch: Current epoch.
        batch_idx: Batch index within the epoch.
        rank: Global rank of the process.

    Returns:
        A seed that depends on the four numbers only (NumPy ``SeedSequence`` mixing).
    """
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(1)[0])


class EpochSeed(Callback):
    """Reseed Python, NumPy and torch per epoch (``seed + 1000 * epoch + rank``) and per batch.

    Makes shuffling-independent randomness (dropout and anything else drawn from the global RNGs
    in the training step) a function of ``(seed, epoch, batch_idx, rank)`` only. Together with
    the resumable training loader of the data modules (order and augmentation seeded by
    ``(seed, epoch, index)``), a run resumed with ``--ckpt_path last`` from an end-of-epoch OR a
    mid-epoch checkpoint (``ModelCheckpoint(every_n_train_steps=...)``) continues exactly like an
    uninterrupted one, without storing RNG states.

    Args:
        seed: Base seed.
        every_batch: Also reseed before every training batch (needed for exact mid-epoch
            resumption; off restores the per-epoch-only behaviour).
    """

    def __init__(self, seed: int = 0, every_batch: bool = True) -> None:
        self.seed = seed
        self.every_batch = every_batch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reseed all generators (and dataloader workers) for this epoch."""
        seed_everything(
            self.seed + 1000 * trainer.current_epoch + trainer.global_rank,
            workers=True,
            verbose=False,
        )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Reseed all generators from ``(seed, epoch, batch_idx, rank)`` (if ``every_batch``)."""
        if self.every_batch:
            value = batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
            random.seed(value)
            np.random.seed(value)
            torch.manual_seed(value)  # CPU and all CUDA devices


RUN_CONFIG_KEY = "run_config"
"""Checkpoint key under which :class:`RunConfigInCheckpoint` stores the run's configuration."""


class RunConfigInCheckpoint(Callback):
    """Store the run's full configuration (YAML text) and working folder in every checkpoint.

    A checkpoint then carries everything needed to rebuild the data preprocessing of its run
    (tokenizer, image size, normalisation), wherever its files were moved to; the CLI adds this
    callback to every run.

    Args:
        config_yaml: The parsed configuration as YAML (as LightningCLI writes ``config.yaml``).
        workdir: Folder that relative paths in the configuration are relative to.
    """

    def __init__(self, config_yaml: str, workdir: str) -> None:
        self.config_yaml = config_yaml
        self.workdir = workdir

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add ``{"yaml": ..., "workdir": ...}`` under :data:`RUN_CONFIG_KEY`."""
        checkpoint[RUN_CONFIG_KEY] = {"yaml": self.config_yaml, "workdir": self.workdir}
