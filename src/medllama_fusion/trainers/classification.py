"""LightningModule for multilabel disease classification with a fusion model.

:class:`FusionClassifier` wraps any :class:`~medllama_fusion.models.FusionModel` (selected by
``class_path`` in YAML) with the paper's training recipe: BCE-with-logits, AdamW (lr 1e-4, weight
decay 1e-5, fused kernels on CUDA) and a per-step linear-warmup + cosine schedule. Validation and
test report exact multilabel AUROC (macro mean and per class, named by label); test adds positive
counts, seeded percentile-bootstrap intervals, ROC curves and a CSV/Markdown table in the log dir.

Checkpoints hold only the adapter state (LoRA weights, new layers, head): the frozen backbone is
rebuilt from the hyperparameters (``BackboneConfig``) when loading, and exactly the adapter keys
are required.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..metrics import AUROCReport, DefinedMultilabelAUROC, auroc_report, format_markdown_table
from ..models import FusionModel
from .schedules import warmup_cosine_schedule

__all__ = ["FusionClassifier"]

OptimizerCallable = Callable[[Iterable[nn.Parameter]], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRScheduler]

_PREFIX = "fusion."


def _given_hparams() -> dict[str, Any] | None:
    """Hyperparameters LightningCLI passes to ``save_hyperparameters`` (None outside the CLI)."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - older/newer Lightning without the context variable
        return None
    var: ContextVar = _given_hyperparameters
    return var.get()


def _plot_roc(preds: Tensor, target: Tensor, report: AUROCReport, path: Path) -> None:
    """Write one ROC curve per defined class to ``path`` (PNG, matplotlib Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.classification import binary_roc

    fig, ax = plt.subplots(figsize=(7, 7))
    for c, name in enumerate(report.label_names):
        if math.isnan(report.auroc[c]):
            continue
        fpr, tpr, _ = binary_roc(preds[:, c].float().cpu(), target[:, c].long().cpu())
        ax.plot(fpr.numpy(), tpr.numpy(), label=f"{name} ({report.auroc[c]:.3f})", lw=1)
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC, mean AUROC {report.mean:.4f}")
    ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


class FusionClassifier(LightningModule):
    """Train and evaluate a fusion model on multilabel chest X-ray + report classification.

    Args:
        fusion: The fusion model (``ParallelFusion``, ``SerialFusion``, ``MixedFusion`` or a user
            subclass of ``FusionModel``). Its head is rebuilt when ``label_names`` has another size.
        label_names: Class names (linked from ``data.label_names`` by the CLI); defaults to
            ``label_<i>`` for ``fusion.num_labels`` classes.
        lr: AdamW learning rate of the default optimizer (paper: 1e-4).
        weight_decay: AdamW weight decay of the default optimizer (paper: 1e-5).
        warmup_steps: Warmup of the default schedule: optimizer steps (int >= 1) or a fraction of
            the run's total steps (float in [0, 1)).
        min_lr_ratio: Final learning rate of the cosine decay as a fraction of ``lr``.
        optimizer: Optional optimizer factory (LightningCLI ``OptimizerCallable``, e.g.
            ``class_path: torch.optim.SGD``); replaces the default AdamW.
        lr_scheduler: Optional scheduler factory (``LRSchedulerCallable``); replaces the default
            warmup + cosine schedule and is stepped every ``lr_scheduler_interval``.
        lr_scheduler_interval: ``"step"`` or ``"epoch"`` for a custom ``lr_scheduler``.
        pos_weight: BCE positive-class weights: one float per label, or ``"auto"`` for
            ``negatives / positives`` from the datamodule's ``train_labels`` tensor ``[N, C]``.
        compile: Compile the fusion model's transformer blocks with :func:`torch.compile`.
        compile_modules: Class names of the blocks to compile when ``compile`` is set.
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"eager"`` for debugging).
        nonfinite_check_interval: Check the training loss for NaN/inf every this many optimizer
            steps (1 = before every optimizer step; the check is the only host sync of training).
        bootstrap_resamples: Test-time bootstrap resamples for the intervals (0 disables them).
        bootstrap_seed: Seed of the bootstrap resampling.
        confidence: Confidence level of the test intervals.
        min_positives: Classes with fewer positives (or negatives) in the test set get no interval.
        report_dir: Folder for the test table and ROC plot; defaults to the trainer's log dir.
        plot_roc: Write ``roc_curves.png`` at test time.
    """

    pos_weight: Tensor

    def __init__(
        self,
        fusion: FusionModel,
        label_names: list[str] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_steps: int | float = 0.05,
        min_lr_ratio: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        pos_weight: list[float] | str | None = None,
        compile: bool = False,
        compile_modules: tuple[str, ...] = ("LlamaDecoderLayer", "CrossAttentionLayer"),
        compile_backend: str = "inductor",
        nonfinite_check_interval: int = 1,
        bootstrap_resamples: int = 1000,
        bootstrap_seed: int = 0,
        confidence: float = 0.95,
        min_positives: int = 2,
        report_dir: str | None = None,
        plot_roc: bool = True,
    ) -> None:
        super().__init__()
        # Under LightningCLI the hyperparameters are the parsed config (plain dicts, with the
        # fusion's class_path), which rebuilds everything on load; a fusion object built in Python
        # is not serialisable, so it is left out and must be passed to load_from_checkpoint.
        cli_hparams = _given_hparams()
        ignore = ["optimizer", "lr_scheduler"] if cli_hparams else ["fusion", "optimizer",
                                                                    "lr_scheduler"]
        self.save_hyperparameters(ignore=ignore)
        if lr_scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"lr_scheduler_interval must be 'step' or 'epoch', got {lr_scheduler_interval!r}."
            )
        if nonfinite_check_interval < 1:
            raise ValueError(
                f"nonfinite_check_interval must be >= 1, got {nonfinite_check_interval}."
            )
        if isinstance(warmup_steps, float) and not 0.0 <= warmup_steps < 1.0:
            raise ValueError(
                f"warmup_steps={warmup_steps}: a float is a fraction of the run in [0, 1); give "
                "an int for a number of steps."
            )
        self.fusion = fusion
        if label_names is None:
            label_names = [f"label_{i}" for i in range(fusion.num_labels)]
        if len(set(label_names)) != len(label_names) or not label_names:
            raise ValueError(f"label_names must be unique and non-empty, got {label_names}.")
        if fusion.num_labels != len(label_names):
            fusion.reset_head(len(label_names))
        self.label_names = list(label_names)
        num_labels = len(label_names)
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ValueError(f"pos_weight must be a list of floats, 'auto' or None, got "
                             f"{pos_weight!r}.")
        if isinstance(pos_weight, list) and len(pos_weight) != num_labels:
            raise ValueError(
                f"pos_weight has {len(pos_weight)} values but there are {num_labels} labels; "
                "give one weight per label."
            )
        initial = torch.tensor(pos_weight, dtype=torch.float32) if isinstance(
            pos_weight, list) else torch.ones(num_labels)
        self.register_buffer("pos_weight", initial, persistent=False)
        self.pos_weight_mode = pos_weight
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.val_auroc = DefinedMultilabelAUROC(num_labels, self.label_names)
        self.test_auroc = DefinedMultilabelAUROC(num_labels, self.label_names)
        self.test_report: AUROCReport | None = None
        self._nonfinite: list[Tensor] = []
        self._recent_batches: list[tuple[int, list[str]]] = []
        self._compiled = False
        self._last_val: tuple[Tensor | None, Tensor | None, Tensor] | None = None
        self._last_val_epoch = 0

    # ------------------------------------------------------------------ setup / optimisation
    def setup(self, stage: str) -> None:
        """Compute ``pos_weight='auto'`` from the training labels and compile blocks if asked."""
        if self.pos_weight_mode == "auto" and stage == "fit":
            datamodule = getattr(self.trainer, "datamodule", None)
            labels = getattr(datamodule, "train_labels", None)
            if labels is None:
                raise ValueError(
                    "pos_weight='auto' needs the datamodule to expose `train_labels` (a [N, C] "
                    "tensor of training labels); pass pos_weight as a list of floats instead."
                )
            labels = torch.as_tensor(labels, dtype=torch.float32)
            positives = labels.sum(0)
            weight = (labels.shape[0] - positives) / positives.clamp(min=1.0)
            self.pos_weight.copy_(weight.to(self.pos_weight.device))
        if self.hparams.get("compile", False) and not self._compiled:
            names = set(self.hparams.get("compile_modules", ()))
            backend = self.hparams.get("compile_backend", "inductor")
            for module in self.fusion.modules():
                if type(module).__name__ in names:
                    module.compile(backend=backend)
            self._compiled = True

    def configure_optimizers(self) -> Any:
        """AdamW + warmup/cosine per step by default; the given factories otherwise."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "the fusion model has no trainable parameters; check its LoRA settings / "
                "blocks_init so that something trains."
            )
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(params)
        else:
            optimizer = torch.optim.AdamW(
                params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"],
                fused=self.device.type == "cuda",
            )
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
            interval = self.hparams["lr_scheduler_interval"]
        else:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError(
                    "the default warmup+cosine schedule needs a finite run length; set "
                    "trainer.max_epochs or trainer.max_steps."
                )
            total = max(1, int(total))
            warmup = self.hparams["warmup_steps"]
            warmup = int(warmup * total) if isinstance(warmup, float) else min(int(warmup), total)
            scheduler = warmup_cosine_schedule(optimizer, warmup, total,
                                               self.hparams["min_lr_ratio"])
            interval = "step"
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ------------------------------------------------------------------ steps
    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """Return the logits ``[B, C]`` for a batch (either modality may be missing)."""
        return self.fusion(
            input_ids=batch.get("input_ids"),
            attention_mask=batch.get("attention_mask"),
            pixel_values=batch.get("pixel_values"),
        ).logits

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.pos_weight
        )

    @staticmethod
    def _batch_size(batch: Mapping[str, Any]) -> int:
        return int(batch["labels"].shape[0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """BCE loss; a non-finite loss is recorded on device and raised before the step."""
        loss = self._loss(self(batch), batch["labels"])
        self._nonfinite.append(~torch.isfinite(loss.detach()))
        self._recent_batches.append((batch_idx, list(batch.get("ids", []))))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=self._batch_size(batch))
        return loss

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Stop training with the step and batch ids when a recent loss was NaN/inf."""
        if len(self._nonfinite) < self.hparams["nonfinite_check_interval"]:
            return
        flags = torch.stack(self._nonfinite)
        batches = self._recent_batches
        self._nonfinite, self._recent_batches = [], []
        if bool(flags.any()):  # the one host sync, every `nonfinite_check_interval` steps
            first = int(flags.nonzero()[0, 0])
            batch_idx, ids = batches[first]
            applied = len(flags) - 1 - first  # updates already taken after the bad loss
            taken = (
                "the optimizer step was not taken"
                if applied == 0
                else f"{applied} optimizer step(s) after it were already taken "
                "(nonfinite_check_interval > 1)"
            )
            raise FloatingPointError(
                f"non-finite training loss at global step {self.global_step - applied} (epoch "
                f"{self.current_epoch}, batch_idx {batch_idx}, ids {ids[:20]}); {taken}. Lower "
                "the learning rate, use bf16-mixed instead of 16-mixed, or check these inputs."
            )

    def _eval_step(self, batch: dict[str, Any], metric: DefinedMultilabelAUROC, stage: str) -> None:
        logits = self(batch)
        labels = batch["labels"]
        self.log(f"{stage}/loss", self._loss(logits, labels), on_step=False, on_epoch=True,
                 sync_dist=True, batch_size=self._batch_size(batch))
        metric.update(torch.sigmoid(logits.float()), labels.long())

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate validation loss and AUROC state on device."""
        self._eval_step(batch, self.val_auroc, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate test loss and AUROC state on device."""
        self._eval_step(batch, self.test_auroc, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int,
                     dataloader_idx: int = 0) -> dict[str, Any]:
        """Return ``{"ids": [...], "probs": Tensor[B, C]}`` for the prediction writer."""
        return {"ids": list(batch.get("ids", [])), "probs": torch.sigmoid(self(batch).float())}

    def _log_auroc(self, stage: str, per_class: Tensor) -> Tensor:
        defined = ~torch.isnan(per_class)
        mean = per_class[defined].mean() if bool(defined.any()) else per_class.new_tensor(math.nan)
        self.log(f"{stage}/auroc", mean, sync_dist=False)
        for name, value in zip(self.label_names, per_class, strict=False):
            self.log(f"{stage}/auroc/{name}", value, sync_dist=False)
        return mean

    def on_validation_epoch_end(self) -> None:
        """Log ``val/auroc`` (macro mean over defined classes) and ``val/auroc/<label>``."""
        per_class = self.val_auroc.compute()
        self._log_auroc("val", per_class)
        if not self.trainer.sanity_checking:
            self._last_val = (self.val_auroc.gathered_preds, self.val_auroc.gathered_target,
                              per_class)
            self._last_val_epoch = self.current_epoch
        self.val_auroc.reset()

    def on_fit_end(self) -> None:
        """Print the per-class table of the last validation (no intervals) on rank 0."""
        last = getattr(self, "_last_val", None)
        if last is None or not self.trainer.is_global_zero:
            return
        preds, target, per_class = last
        report = auroc_report(preds, target, self.label_names, per_class=per_class,
                              num_resamples=0)
        print(f"\nFinal validation AUROC ({len(target)} examples, after epoch "
              f"{self._last_val_epoch + 1}):\n{format_markdown_table(report)}\n", flush=True)

    def on_test_epoch_end(self) -> None:
        """Log test AUROC, then build, print and save the table with bootstrap intervals."""
        per_class = self.test_auroc.compute()
        self._log_auroc("test", per_class)
        preds, target = self.test_auroc.gathered_preds, self.test_auroc.gathered_target
        self.test_auroc.reset()
        assert preds is not None and target is not None
        report = auroc_report(
            preds, target, self.label_names, per_class=per_class,
            num_resamples=self.hparams["bootstrap_resamples"], seed=self.hparams["bootstrap_seed"],
            confidence=self.hparams["confidence"], min_positives=self.hparams["min_positives"],
        )
        self.test_report = report
        for name, count in zip(self.label_names, report.positives, strict=False):
            self.log(f"test/positives/{name}", float(count), sync_dist=False)
        if not self.trainer.is_global_zero:
            return
        table = format_markdown_table(report)
        print(f"\nTest AUROC ({len(target)} examples):\n{table}\n", flush=True)
        out = self._report_dir()
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        (out / "test_auroc.md").write_text(table + "\n")
        with open(out / "test_auroc.csv", "w", newline="") as handle:
            rows = report.rows()
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        if self.hparams["plot_roc"]:
            _plot_roc(preds, target, report, out / "roc_curves.png")

    def _report_dir(self) -> Path | None:
        if self.hparams["report_dir"]:
            return Path(self.hparams["report_dir"])
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(log_dir) if log_dir else None

    # ------------------------------------------------------------------ adapter-only checkpoints
    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Everything a checkpoint stores: the fusion's adapter state, keyed like ``state_dict``."""
        return {_PREFIX + k: v for k, v in self.fusion.adapter_state_dict().items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Replace the full state dict with the adapter state (the frozen base is not written)."""
        checkpoint["state_dict"] = {k: v.detach().cpu() if v.is_cuda else v.detach()
                                    for k, v in self.adapter_state_dict().items()}

    def load_state_dict(  # type: ignore[override]
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load an adapter checkpoint (exactly the adapter keys) or a full ``state_dict()``.

        Raises:
            ValueError: When the keys are neither the full set nor exactly the adapter set; the
                message lists the missing and unexpected keys.
        """
        keys = set(state_dict)
        if keys == set(self.state_dict()):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        expected = set(self.adapter_state_dict())
        if keys != expected:
            missing = sorted(expected - keys)
            unexpected = sorted(keys - expected)
            raise ValueError(
                f"checkpoint state_dict does not match this model's adapter keys: missing "
                f"{missing[:20]} ({len(missing)}), unexpected {unexpected[:20]} "
                f"({len(unexpected)}). Load it with the same fusion class and settings "
                "(LoRA r/targets, layers, labels) it was trained with."
            )
        self.fusion.load_adapter_state_dict(
            {k[len(_PREFIX):]: v for k, v in state_dict.items()}
        )
        return _IncompatibleKeys([], [])

    def on_fit_start(self) -> None:
        """Log the trainable-parameter report of the fusion model once."""
        report = getattr(self.fusion, "trainable_parameter_report", None)
        if callable(report) and self.trainer.is_global_zero:
            rank_zero_info(f"trainable parameters: {report()}")
