"""Test-only callbacks (importable by dotted class_path from subprocess runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class Progress(Callback):
    """Append ``epoch E batch B`` after each training batch and sleep ``delay`` seconds."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path = Path(path)
        self.delay = delay

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(f"epoch {trainer.current_epoch} batch {batch_idx}\n")
        time.sleep(self.delay)
