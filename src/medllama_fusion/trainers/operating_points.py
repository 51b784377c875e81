"""Per-class decision thresholds chosen on validation, applied in test and predict, calibration.

:class:`OperatingPoints` is a Lightning callback (the CLI adds it to every run; configure it
with ``--operating_points.method sensitivity --operating_points.target_sensitivity 0.9``):

- after every validation epoch of ``fit`` it picks one threshold per class on the validation
  probabilities: the one with maximal F1 (``method="f1"``), or the highest one that reaches
  ``target_sensitivity`` (``method="sensitivity"``, via torchmetrics'
  ``binary_specificity_at_sensitivity``). A class without positives or negatives in
  validation keeps ``default_threshold``. The thresholds are saved in every checkpoint (the
  callback state) and restored by ``test`` / ``predict`` with ``--ckpt_path``;
- ``test`` logs and writes, per class and macro-averaged, sensitivity, specificity and F1 at
  those thresholds and the expected calibration error (``operating_points.csv`` / ``.md``) and a
  reliability diagram (``reliability_diagram.png``) next to the AUROC table;
- ``predict`` adds 0/1 decisions to each prediction batch (``decisions``), which the prediction
  writer turns into ``<label>_decision`` columns of ``predictions.csv``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.hooks import RemovableHandle
from torchmetrics.functional.classification import (
    binary_calibration_error,
    binary_precision_recall_curve,
    binary_specificity_at_sensitivity,
    multilabel_f1_score,
    multilabel_recall,
    multilabel_specificity,
)

__all__ = [
    "STATE_KEY",
    "OperatingPoints",
    "select_thresholds",
    "threshold_metrics",
    "thresholds_from_checkpoint",
]

_METHODS = ("f1", "sensitivity")
STATE_KEY = "OperatingPoints"
"""Key of the callback's state (the thresholds) in a checkpoint's ``callbacks``."""


def thresholds_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, float] | None:
    """The per-label thresholds an :class:`OperatingPoints` callback stored (or None).

    Args:
        checkpoint: A loaded Lightning checkpoint dict.

    Returns:
        ``{label: threshold}`` or ``None``.
    """
    state = (checkpoint.get("callbacks") or {}).get(STATE_KEY) or {}
    thresholds = state.get("thresholds")
    return {str(k): float(v) for k, v in thresholds.items()} if thresholds else None


def _defined(target: Tensor) -> Tensor:
    """``[C]`` bool: the class has at least one positive and one negative."""
    positives = target.sum(0)
    return (positives > 0) & (positives < target.shape[0])


def select_thresholds(
    probs: Tensor,
    target: Tensor,
    method: str = "f1",
    target_sensitivity: float = 0.9,
    default: float = 0.5,
) -> Tensor:
    """Choose one threshold per class (see the module docstring).

    Args:
        probs: ``[N, C]`` probabilities.
        target: ``[N, C]`` 0/1 labels.
        method: ``"f1"`` (maximal F1) or ``"sensitivity"`` (sensitivity >= the target, best
            specificity).
        target_sensitivity: Minimal sensitivity for ``method="sensitivity"``.
        default: Threshold of classes without positives or negatives.

    Returns:
        ``[C]`` thresholds.
    """
    probs, target = probs.float().cpu(), target.long().cpu()
    num = probs.shape[1]
    thresholds = torch.full((num,), float(default))
    defined = _defined(target)
    if method == "sensitivity":
        for c in defined.nonzero().flatten().tolist():
            _, found = binary_specificity_at_sensitivity(
                probs[:, c], target[:, c], target_sensitivity
            )
            if math.isfinite(float(found)):
                thresholds[c] = float(found)
        return thresholds
    for c in range(num):
        if not defined[c]:
            continue
        precision, recall, cuts = binary_precision_recall_curve(probs[:, c], target[:, c])
        f1 = 2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]).clamp(min=1e-12)
        thresholds[c] = float(cuts[int(f1.argmax())])
    return thresholds


def threshold_metrics(
    probs: Tensor, target: Tensor, thresholds: Tensor, n_bins: int = 15
) -> dict[str, Tensor]:
    """Sensitivity, specificity, F1 at per-class thresholds, and calibration error per class.

    Args:
        probs: ``[N, C]`` probabilities.
        target: ``[N, C]`` 0/1 labels.
        thresholds: ``[C]`` thresholds.
        n_bins: Bins of the expected calibration error.

    Returns:
        ``{"sensitivity", "specificity", "f1", "ece"}``: ``[C]`` tensors (NaN where a class
        has no positives, resp. no negatives), plus ``"ece_all"``: the ECE over all labels
        pooled (scalar).
    """
    probs, target = probs.float().cpu(), target.long().cpu()
    num = probs.shape[1]
    decisions = (probs >= thresholds.cpu()[None, :]).float()
    positives = target.sum(0)
    negatives = target.shape[0] - positives
    nan = torch.tensor(math.nan)
    sensitivity = multilabel_recall(decisions, target, num, average=None, zero_division=0)
    specificity = multilabel_specificity(decisions, target, num, average=None)
    f1 = multilabel_f1_score(decisions, target, num, average=None, zero_division=0)
    ece = torch.stack(
        [
            binary_calibration_error(
                probs[:, c].contiguous(), target[:, c].contiguous(), n_bins=n_bins
            )
            for c in range(num)
        ]
    )
    return {
        "sensitivity": torch.where(positives > 0, sensitivity, nan),
        "specificity": torch.where(negatives > 0, specificity, nan),
        "f1": torch.where(positives > 0, f1, nan),
        "ece": ece,
        "ece_all": binary_calibration_error(probs.flatten(), target.flatten(), n_bins=n_bins),
    }


def _gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate a CPU tensor over all processes (sizes may differ between ranks)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def plot_reliability(probs: Tensor, target: Tensor, path: Path, n_bins: int = 15) -> None:
    """Write a reliability diagram (all labels pooled) with the ECE in the title (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, y = probs.float().cpu().flatten(), target.float().cpu().flatten()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = torch.bucketize(p, edges[1:-1])
    centres, observed, counts = [], [], []
    for b in range(n_bins):
        chosen = index == b
        if chosen.any():
            centres.append(float(p[chosen].mean()))
            observed.append(float(y[chosen].mean()))
            counts.append(int(chosen.sum()))
    ece = float(binary_calibration_error(p, y.long(), n_bins=n_bins))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.6, label="perfect calibration")
    ax.plot(centres, observed, "o-", label="model")
    for x, yy, n in zip(centres, observed, counts, strict=True):
        ax.annotate(str(n), (x, yy), fontsize=6, textcoords="offset points", xytext=(3, -8))
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive fraction",
        title=f"Reliability (all labels pooled), ECE {ece:.4f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class OperatingPoints(Callback):
    """Choose thresholds on validation, apply them in test/predict, report calibration.

    Args:
        method: ``"f1"`` (maximal F1 per class) or ``"sensitivity"`` (highest threshold with
            sensitivity >= ``target_sensitivity``).
        target_sensitivity: Sensitivity of the ``"sensitivity"`` method.
        default_threshold: Threshold of classes validation cannot decide (no positives or no
            negatives), and of every class before any validation.
        calibration_bins: Bins of the expected calibration error and the reliability diagram.
        report_dir: Folder of the test files; default the module's ``report_dir`` or the
            trainer's log dir.
    """

    def __init__(
        self,
        method: str = "f1",
        target_sensitivity: float = 0.9,
        default_threshold: float = 0.5,
        calibration_bins: int = 15,
        report_dir: str | None = None,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"method={method!r}; use 'f1' or 'sensitivity'.")
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}.")
        self.method = method
        self.target_sensitivity = target_sensitivity
        self.default_threshold = default_threshold
        self.calibration_bins = calibration_bins
        self.report_dir = report_dir
        self.thresholds: dict[str, float] = {}
        self.test_metrics: dict[str, Tensor] | None = None
        self._handle: RemovableHandle | None = None
        self._pending: Tensor | None = None
        self._seen: list[tuple[Tensor, Tensor, Tensor | None]] = []

    @property
    def state_key(self) -> str:
        """One state per class (restored whatever the settings of the loading run)."""
        return STATE_KEY

    # ------------------------------------------------------------------ capture
    def _attach(self, pl_module: LightningModule) -> None:
        self._detach()
        self._pending, self._seen = None, []
        target = getattr(pl_module, "fusion", pl_module)

        def hook(module: Any, args: Any, output: Any) -> None:
            self._pending = getattr(output, "logits", output).detach().float()

        self._handle = target.register_forward_hook(hook)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, batch: Mapping[str, Any]) -> None:
        logits, self._pending = self._pending, None
        if logits is not None and isinstance(batch, Mapping) and "labels" in batch:
            self._seen.append((logits, batch["labels"].detach(), batch.get("index")))

    def _gathered(self, pl_module: LightningModule) -> tuple[Tensor, Tensor] | None:
        """Probabilities and labels of the epoch from all processes, each sample once."""
        self._detach()
        seen, self._seen = self._seen, []
        if not seen:
            return None
        probs = torch.sigmoid(torch.cat([logits for logits, _, _ in seen])).cpu()
        target = torch.cat([labels for _, labels, _ in seen]).long().cpu()
        indices = [index for _, _, index in seen if index is not None]
        index = torch.cat(indices).cpu() if len(indices) == len(seen) else None
        if pl_module.trainer.world_size > 1:
            probs, target = _gather_cat(probs), _gather_cat(target)
            index = _gather_cat(index) if index is not None else None
        if index is not None:  # drop repeats (distributed padding), keep the first occurrence
            order = torch.argsort(index, stable=True)
            keep = torch.ones_like(order, dtype=torch.bool)
            keep[1:] = index[order][1:] != index[order][:-1]
            chosen = order[keep]
            probs, target = probs[chosen], target[chosen]
        return probs.cpu(), target.cpu()

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Capture the validation logits."""
        self._attach(pl_module)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Pair the batch's logits with its labels."""
        self._record(batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Choose the thresholds on this validation epoch (not during the sanity check)."""
        gathered = self._gathered(pl_module)
        if gathered is None or trainer.sanity_checking:
            return
        probs, target = gathered
        names = list(getattr(pl_module, "label_names", [])) or [
            f"label_{i}" for i in range(probs.shape[1])
        ]
        chosen = select_thresholds(
            probs, target, self.method, self.target_sensitivity, self.default_threshold
        )
        self.thresholds = dict(zip(names, chosen.tolist(), strict=True))

    # ------------------------------------------------------------------ test
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Capture the test logits."""
        self._attach(pl_module)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Pair the batch's logits with its labels."""
        self._record(batch)

    def _threshold_tensor(self, names: list[str]) -> Tensor:
        return torch.tensor([self.thresholds.get(n, self.default_threshold) for n in names])

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log and write metrics at the thresholds, the ECE and the reliability diagram."""
        gathered = self._gathered(pl_module)
        if gathered is None:
            return
        probs, target = gathered
        names = list(getattr(pl_module, "label_names", [])) or [
            f"label_{i}" for i in range(probs.shape[1])
        ]
        thresholds = self._threshold_tensor(names)
        metrics = threshold_metrics(probs, target, thresholds, self.calibration_bins)
        self.test_metrics = metrics
        for key in ("sensitivity", "specificity", "f1", "ece"):
            pl_module.log(f"test/{key}", _nanmean(metrics[key]), sync_dist=False)
            for name, value in zip(names, metrics[key].tolist(), strict=True):
                pl_module.log(f"test/{key}/{name}", value, sync_dist=False)
        pl_module.log("test/ece_all", float(metrics["ece_all"]), sync_dist=False)
        out = self._report_dir(trainer, pl_module)  # on every rank: log_dir is a collective
        if not trainer.is_global_zero:
            return
        source = "validation" if self.thresholds else f"default {self.default_threshold}"
        rows = [
            {
                "label": name,
                "threshold": f"{thresholds[c]:.4f}",
                "sensitivity": f"{metrics['sensitivity'][c]:.4f}",
                "specificity": f"{metrics['specificity'][c]:.4f}",
                "f1": f"{metrics['f1'][c]:.4f}",
                "ece": f"{metrics['ece'][c]:.4f}",
                "positives": int(target[:, c].sum()),
            }
            for c, name in enumerate(names)
        ]
        rows.append(
            {
                "label": "mean",
                "threshold": "",
                **{k: f"{_nanmean(metrics[k]):.4f}" for k in ("sensitivity", "specificity", "f1")},
                "ece": f"{float(metrics['ece_all']):.4f}",
                "positives": int(target.sum()),
            }
        )
        header = list(rows[0])
        table = "\n".join(
            ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
        )
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
            writer.writerows(rows)
        plot_reliability(probs, target, out / "reliability_diagram.png", self.calibration_bins)
        print(f"operating points and reliability diagram written to {out.resolve()}", flush=True)

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

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Remove the forward hook."""
        self._detach()
