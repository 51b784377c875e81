"""Lightning callbacks: prediction CSV writer and per-epoch reseeding for exact resumption."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

__all__ = ["EpochSeed", "PredictionCSVWriter"]


class PredictionCSVWriter(BasePredictionWriter):
    """Write per-label probabilities with example ids to a CSV at the end of ``predict``.

    Columns: ``id`` then one column per label name of the module (``label_<i>`` if it has none).
    With several processes each rank writes ``<stem>.rank<r>.csv``.

    Args:
        path: Output file; defaults to ``<log_dir>/predictions.csv``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path
        self.written: Path | None = None

    def _target(self, trainer: Trainer) -> Path:
        base = Path(self.path) if self.path else Path(
            trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
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
                if not header_written:
                    names = names or [f"label_{i}" for i in range(probs.shape[1])]
                    writer.writerow(["id", *names])
                    header_written = True
                ids = out["ids"] or [str(i) for i in range(len(probs))]
                for example_id, row in zip(ids, probs.tolist(), strict=False):
                    writer.writerow([example_id, *(f"{p:.6f}" for p in row)])
        self.written = path


class EpochSeed(Callback):
    """Reseed Python, NumPy and torch at every training epoch start with ``seed + epoch``.

    Makes an epoch's shuffling, augmentation and dropout a function of ``(seed, epoch)`` only, so
    a run resumed from an end-of-epoch checkpoint (``--ckpt_path last``) continues exactly like an
    uninterrupted one.

    Args:
        seed: Base seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reseed all generators (and dataloader workers) for this epoch."""
        seed_everything(self.seed + 1000 * trainer.current_epoch + trainer.global_rank,
                        workers=True, verbose=False)
