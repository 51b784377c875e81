"""The :class:`OperatingPoints` callback: per-class decision thresholds and calibration.

The callback (the CLI adds it to every run; configure it with
``--operating_points.method sensitivity --operating_points.target_sensitivity 0.9``):

- after every validation epoch (not the sanity check) it picks one threshold per class on the
  validation probabilities with :func:`~medllama_fusion.metrics.select_thresholds`: the one with
  maximal F1 (``method="f1"``), or the highest one that reaches ``target_sensitivity``
  (``method="sensitivity"``). A class without positives or negatives in validation keeps
  ``default_threshold``. The thresholds are saved in every checkpoint (the callback state, under
  :data:`STATE_KEY`) and restored by ``test`` / ``predict`` with ``--ckpt_path``;
  :func:`thresholds_from_checkpoint` reads them from a loaded checkpoint;
- ``test`` logs and writes, per class and macro-averaged, sensitivity, specificity and F1 at
  those thresholds and the expected calibration error (``operating_points.csv`` / ``.md``) and a
  reliability diagram (``reliability_diagram.png``, with the ``plots`` extra) next to the AUROC
  table;
- ``predict`` adds 0/1 decisions to each prediction batch (``decisions``), which the prediction
  writer turns into ``<label>_decision`` columns of ``predictions.csv``.

The callback computes nothing itself: it reads the epoch's evaluated rows from
:meth:`~medllama_fusion.trainers.FusionClassifier.evaluated` (probabilities and labels gathered
from all processes, each sample once, the rows of the AUROC table) and passes them to the
functions of :mod:`medllama_fusion.metrics`. With a LightningModule that has no ``evaluated``
method it does nothing and warns once.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ..extras import missing_extra
from ..metrics import (
    ThresholdMethod,
    markdown_table,
    plot_reliability,
    select_thresholds,
    threshold_metrics,
    threshold_rows,
)

__all__ = ["STATE_KEY", "OperatingPoints", "thresholds_from_checkpoint"]

STATE_KEY = "OperatingPoints"
"""Key of the callback's state in a checkpoint's ``callbacks`` entry."""


def thresholds_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, float] | None:
    """Return the per-label thresholds an :class:`OperatingPoints` callback stored (or None).

    Args:
        checkpoint: A loaded Lightning checkpoint dict.

    Returns:
        ``{label: threshold}``, or ``None`` when the checkpoint holds no thresholds (no callback,
        or no validation before it was saved).
    """
    for key, state in checkpoint.get("callbacks", {}).items():
        if str(key).startswith(STATE_KEY) and state.get("thresholds"):
            return {str(k): float(v) for k, v in state["thresholds"].items()}
    return None


class OperatingPoints(Callback):
    """Choose thresholds on validation, apply them in test/predict, report calibration.

    Args:
        method: ``"f1"`` (maximal F1 per class) or ``"sensitivity"`` (highest threshold with
            sensitivity >= ``target_sensitivity``).
        target_sensitivity: Sensitivity of the ``"sensitivity"`` method, in ``(0, 1]``.
        default_threshold: Threshold of classes validation cannot decide (no positives or no
            negatives), and of every class before any validation.
        calibration_bins: Bins of the expected calibration error and the reliability diagram.
        report_dir: Folder of the test files; default the module's ``report_dir`` or the
            trainer's log dir.

    Raises:
        ValueError: For an unknown ``method`` or a ``target_sensitivity`` outside ``(0, 1]``.
    """

    def __init__(
        self,
        method: ThresholdMethod = "f1",
        target_sensitivity: float = 0.9,
        default_threshold: float = 0.5,
        calibration_bins: int = 15,
        report_dir: str | None = None,
    ) -> None:
        # Checked here, not only by select_thresholds, so a wrong value fails before training.
        if method not in get_args(ThresholdMethod):
            raise ValueError(f"method={method!r}; use 'f1' or 'sensitivity'.")
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}.")
        self.method: ThresholdMethod = method
        self.target_sensitivity = target_sensitivity
        self.default_threshold = default_threshold
        self.calibration_bins = calibration_bins
        self.report_dir = report_dir
        self.thresholds: dict[str, float] = {}
        self.test_metrics: dict[str, Tensor] | None = None
        self._warned = False

    @property
    def state_key(self) -> str:
        """One state per class (restored whatever the settings of the loading run)."""
        return STATE_KEY

    def _accessor(self, pl_module: LightningModule) -> Callable[[str], Any] | None:
        """The module's ``evaluated`` method, or None (with one warning) when it has none."""
        accessor = getattr(pl_module, "evaluated", None)
        if callable(accessor):
            return accessor
        if not self._warned:
            self._warned = True
            rank_zero_warn(
                f"OperatingPoints needs a LightningModule with an `evaluated(stage)` method, such "
                f"as FusionClassifier; {type(pl_module).__name__} has none, so no thresholds are "
                "chosen or applied and no operating-point report is written.",
                category=UserWarning,
            )
        return None

    def _evaluated(self, pl_module: LightningModule, stage: str) -> Any:
        """The module's gathered, de-duplicated rows of this ``stage`` epoch, or None."""
        accessor = self._accessor(pl_module)
        return accessor(stage) if accessor is not None else None

    def _names(self, pl_module: LightningModule, num_labels: int) -> list[str]:
        names = list(getattr(pl_module, "label_names", []))
        return names or [f"label_{i}" for i in range(num_labels)]

    def _threshold_tensor(self, names: list[str]) -> Tensor:
        return torch.tensor([self.thresholds.get(n, self.default_threshold) for n in names])

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Warn now when the module cannot give the callback its evaluated rows."""
        self._accessor(pl_module)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Choose the thresholds on this validation epoch (not during the sanity check)."""
        rows = None if trainer.sanity_checking else self._evaluated(pl_module, "val")
        if rows is None:
            return
        chosen = select_thresholds(
            rows.probs, rows.target, self.method, self.target_sensitivity, self.default_threshold
        )
        names = self._names(pl_module, rows.probs.shape[1])
        self.thresholds = dict(zip(names, chosen.tolist(), strict=True))

    # ------------------------------------------------------------------ test
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log and write metrics at the thresholds, the ECE and the reliability diagram."""
        rows = self._evaluated(pl_module, "test")
        if rows is None:
            return
        probs, target = rows.probs, rows.target
        names = self._names(pl_module, probs.shape[1])
        thresholds = self._threshold_tensor(names)
        metrics = threshold_metrics(probs, target, thresholds, self.calibration_bins)
        self.test_metrics = metrics
        for key in ("sensitivity", "specificity", "f1", "ece"):
            pl_module.log(f"test/{key}", float(metrics[key].nanmean()), sync_dist=False)
            for name, value in zip(names, metrics[key].tolist(), strict=True):
                pl_module.log(f"test/{key}/{name}", value, sync_dist=False)
        pl_module.log("test/ece_all", float(metrics["ece_all"]), sync_dist=False)
        out = self._report_dir(trainer, pl_module)  # on every rank: log_dir is a collective
        if not trainer.is_global_zero:
            return
        table_rows = threshold_rows(names, thresholds, metrics, target)
        header = list(table_rows[0])
        table = markdown_table(header, [[row[h] for h in header] for row in table_rows])
        source = "validation" if self.thresholds else f"default {self.default_threshold}"
        print(
            f"\nOperating points ({self.method}, thresholds from {source}; mean ECE row: all "
            f"labels pooled):\n{table}\n",
            flush=True,
        )
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        (out / "operating_points.md").write_text(table + "\n")
        with open(out / "operating_points.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(table_rows)
        note = missing_extra("plots", "reliability_diagram.png skipped")
        if note is None:
            plot_reliability(probs, target, out / "reliability_diagram.png", self.calibration_bins)
        print(
            f"operating points{' and reliability diagram' if note is None else ''} written to "
            f"{out.resolve()}",
            flush=True,
        )
        if note is not None:
            print(note, flush=True)

    def _report_dir(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        if self.report_dir:
            return Path(self.report_dir)
        own = getattr(pl_module, "hparams", {}).get("report_dir")
        if own:
            return Path(own)
        log_dir = trainer.log_dir or trainer.default_root_dir
        return Path(log_dir) if log_dir else None

    # ------------------------------------------------------------------ predict
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Add ``decisions`` (0/1 at the thresholds) to the prediction output dict."""
        if not self.thresholds or not isinstance(outputs, dict) or "probs" not in outputs:
            return
        if self._accessor(pl_module) is None:
            return
        names = list(getattr(pl_module, "label_names", []))
        thresholds = self._threshold_tensor(names).to(outputs["probs"].device)
        outputs["decisions"] = (outputs["probs"] >= thresholds[None, :]).to(torch.int64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The thresholds and how they were chosen (stored in checkpoints)."""
        return {
            "thresholds": dict(self.thresholds),
            "method": self.method,
            "target_sensitivity": self.target_sensitivity,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the thresholds of a checkpoint."""
        self.thresholds = {str(k): float(v) for k, v in state_dict.get("thresholds", {}).items()}
