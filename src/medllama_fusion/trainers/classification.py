"""LightningModule for multilabel disease classification with a fusion model.

:class:`FusionClassifier` wraps any :class:`~medllama_fusion.models.FusionModel` (selected by
``class_path`` in YAML) with the paper's training recipe: BCE-with-logits, AdamW (lr 1e-4, weight
decay 1e-5, fused kernels on CUDA) and a per-step linear-warmup + cosine schedule (transformers'
``get_cosine_with_min_lr_schedule_with_warmup``). Validation and test report exact multilabel
AUROC (macro mean and per class, named by label) and the loss over the evaluated set, counting
every sample once under distributed evaluation (rows are de-duplicated by their dataset
``index``); test adds positive counts, seeded report-clustered bootstrap intervals, ROC curves and
a CSV/Markdown table in the log dir. :meth:`FusionClassifier.evaluated` gives those evaluated rows
(probabilities, labels, row and report indices) to callbacks such as
:class:`~medllama_fusion.trainers.OperatingPoints`. The numbers, tables and figures come from
:mod:`medllama_fusion.metrics`.

Checkpoints hold only the adapter state (LoRA weights, new layers, head): the frozen backbone is
rebuilt from the hyperparameters (``BackboneConfig``) when loading, and exactly the adapter keys
are required.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..data.dataset import model_inputs
from ..data.preprocessing import PREPROCESSING_KEY
from ..errors import InputError
from ..extras import missing_extra
from ..metrics import (
    DEFAULT_MIN_POSITIVES,
    AUROCReport,
    DefinedMultilabelAUROC,
    auroc_report,
    format_markdown_table,
    plot_roc_curves,
)
from ..models import FusionModel
from ..models.parameter_report import format_parameter_report
from ..models.state_mismatch import CheckpointMismatchError, describe_mismatch
from .compilation import compile_blocks
from .nonfinite import NonFiniteGuard
from .schedules import warmup_cosine_schedule

__all__ = ["EvaluatedRows", "EvaluationStage", "FusionClassifier"]

OptimizerCallable = Callable[[Iterable[nn.Parameter]], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRScheduler]

_PREFIX = "fusion."
_CKPT_KEY = "fusion_classifier"
"""Checkpoint entry with the ``pos_weight`` and the default schedule's length."""
PROGRESS_BAR_LOSS = "loss"
"""Name of the training loss in the progress bar (updated at the trainer's logging steps)."""


def _given_hparams() -> dict[str, Any] | None:
    """Hyperparameters LightningCLI passes to ``save_hyperparameters`` (None outside the CLI)."""
    # Lightning has no public API for this; without it a fusion built in Python lands in hparams.
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - older/newer Lightning without the context variable
        return None
    var: ContextVar = _given_hyperparameters
    return var.get()


def _trained_labels(checkpoint: Mapping[str, Any]) -> list[str] | None:
    """The label names a checkpoint was trained on (its record, else its hyperparameters)."""
    record = checkpoint.get(PREPROCESSING_KEY)
    if isinstance(record, Mapping) and record.get("label_names"):
        return [str(name) for name in record["label_names"]]
    names = (checkpoint.get("hyper_parameters") or {}).get("label_names")
    return [str(name) for name in names] if names else None


EvaluationStage = Literal["val", "test"]
"""The evaluation loops whose rows :meth:`FusionClassifier.evaluated` gives."""


@dataclass(frozen=True)
class EvaluatedRows:
    """The rows of one validation or test epoch, gathered from all processes, each sample once.

    Rows are in ascending dataset ``index`` order when the batches carry ``index`` (then they do
    not depend on the number of processes), in loader order otherwise.

    Attributes:
        probs: Probabilities ``[N, C]`` (sigmoid of the logits).
        target: Labels ``[N, C]`` in {0, 1}.
        index: Dataset row index ``[N]``, or ``None`` when the batches had no ``index``.
        groups: Report (cluster) id ``[N]``, or ``None`` when the batches had no ``group_index``.
        auroc: Per-class AUROC ``[C]`` (``NaN`` where a class has no positives or no negatives).
        loss: Mean per-row loss (scalar), or ``None`` when it was not recorded.
    """

    probs: Tensor
    target: Tensor
    index: Tensor | None
    groups: Tensor | None
    auroc: Tensor
    loss: Tensor | None


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
            the run's total steps (float in [0, 1)). The learning rate rises linearly from 0.
        min_lr_ratio: Final learning rate of the cosine decay as a fraction of ``lr``. A run
            resumed with a longer ``max_epochs``/``max_steps`` rebuilds the schedule for the
            new total (with a warning) instead of continuing at the end-of-run rate.
        optimizer: Optional optimizer factory (LightningCLI ``OptimizerCallable``, e.g.
            ``class_path: torch.optim.SGD``); replaces the default AdamW.
        lr_scheduler: Optional scheduler factory (``LRSchedulerCallable``); replaces the default
            warmup + cosine schedule and is stepped every ``lr_scheduler_interval``.
        lr_scheduler_interval: ``"step"`` or ``"epoch"`` for a custom ``lr_scheduler``.
        pos_weight: BCE positive-class weights: one float per label, or ``"auto"`` for
            ``negatives / positives`` from the datamodule's ``train_labels`` tensor ``[N, C]``,
            computed for every stage (fit, validate, test) and stored in the checkpoint; a
            checkpoint's stored weights take precedence, so evaluation reuses the training ones.
        compile: Compile the fusion model's transformer blocks with :func:`torch.compile`.
            A data module with ``use_length_buckets()`` (the library's) is told at setup, so
            it pads reports to a few fixed lengths; the blocks are then compiled with static
            shapes (``dynamic=False``, one compilation per length), otherwise with
            ``torch.compile``'s default dynamic-shape handling.
        compile_modules: Class names of the blocks to compile when ``compile`` is set.
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"eager"`` for debugging).
        nonfinite_check_interval: Read the on-device NaN/inf flags of the training losses every
            this many optimizer steps; ``None`` (default) = every ``log_every_n_steps`` of the
            trainer (its logging steps, which sync anyway). The flags are also read before
            validation, before a checkpoint is saved and at the end of each epoch and of
            training, so no evaluation or checkpoint uses weights updated from a NaN loss. ``1``
            reads them before every optimizer step: one host sync per step, and the only
            setting that stops before the bad update is applied.
        bootstrap_resamples: Test-time bootstrap resamples for the intervals (0 disables them).
        bootstrap_seed: Seed of the bootstrap resampling.
        confidence: Confidence level of the test intervals.
        min_positives: Fewest positive and negative reports a class needs in the test set for
            an interval and for the test macro mean (default 5: from there on the intervals
            covered 95-97 % in simulation, see
            :data:`~medllama_fusion.metrics.DEFAULT_MIN_POSITIVES`); the others are reported
            with a note and never averaged in.
        report_dir: Folder for the test table and ROC plot; defaults to the trainer's log dir.
        plot_roc: Write ``roc_curves.png`` at test time (needs the ``plots`` extra; without it
            the picture is skipped with a note).
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
        lr_scheduler_interval: Literal["step", "epoch"] = "epoch",
        pos_weight: list[float] | Literal["auto"] | None = None,
        compile: bool = False,
        compile_modules: tuple[str, ...] = ("LlamaDecoderLayer", "CrossAttentionLayer"),
        compile_backend: str = "inductor",
        nonfinite_check_interval: int | None = None,
        bootstrap_resamples: int = 1000,
        bootstrap_seed: int = 0,
        confidence: float = 0.95,
        min_positives: int = DEFAULT_MIN_POSITIVES,
        report_dir: str | None = None,
        plot_roc: bool = True,
    ) -> None:
        super().__init__()
        # Under LightningCLI the hyperparameters are the parsed config (plain dicts, with the
        # fusion's class_path), which rebuilds everything on load; a fusion object built in Python
        # is not serialisable, so it is left out and must be passed to load_from_checkpoint.
        cli_hparams = _given_hparams()
        ignore = (
            ["optimizer", "lr_scheduler"]
            if cli_hparams
            else ["fusion", "optimizer", "lr_scheduler"]
        )
        self.save_hyperparameters(ignore=ignore)
        self._nonfinite = NonFiniteGuard(nonfinite_check_interval)
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
        # Any other string from Python would otherwise fail later as unresolved "auto" weights.
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ValueError(
                f"pos_weight must be a list of floats, 'auto' or None, got {pos_weight!r}."
            )
        if isinstance(pos_weight, list) and len(pos_weight) != num_labels:
            raise ValueError(
                f"pos_weight has {len(pos_weight)} values but there are {num_labels} labels; "
                "give one weight per label."
            )
        initial = (
            torch.tensor(pos_weight, dtype=torch.float32)
            if isinstance(pos_weight, list)
            else torch.ones(num_labels)
        )
        self.register_buffer("pos_weight", initial, persistent=False)
        self.pos_weight_mode = pos_weight
        self._pos_weight_ready = not isinstance(pos_weight, str)
        self._schedule_steps: tuple[int, int] | None = None  # (warmup, total) of this run
        self._loaded_schedule: tuple[int, int] | None = None  # from the resumed checkpoint
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.val_auroc = DefinedMultilabelAUROC(num_labels, self.label_names)
        self.test_auroc = DefinedMultilabelAUROC(num_labels, self.label_names)
        self.test_report: AUROCReport | None = None
        self._compiled = False
        self._evaluated: dict[str, EvaluatedRows] = {}
        self._last_val: EvaluatedRows | None = None
        self._last_val_epoch = 0

    # ------------------------------------------------------------------ setup / optimisation
    def setup(self, stage: str) -> None:
        """Check the tokenizer fits the model, set ``pos_weight='auto'``, compile if asked.

        With ``compile``, the blocks are compiled with static shapes when the data module pads
        reports to fixed lengths (its ``padded_lengths()``; the command line links
        ``model_compiles`` of the library's data modules to ``compile``).
        """
        if self.pos_weight_mode == "auto":
            self._auto_pos_weight(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        record = getattr(datamodule, "preprocessing", None)
        if record is not None and "text" in record.modalities and record.tokenizer is not None:
            tokenizer = record.loaded_tokenizer
            self.fusion.backbone.check_vocabulary(len(tokenizer), f"tokenizer {record.tokenizer!r}")
        if not self.hparams.get("compile", False):
            return
        padded = getattr(datamodule, "padded_lengths", None)
        lengths = padded() if callable(padded) else None
        if lengths is None and getattr(datamodule, "model_compiles", True) is False:
            rank_zero_warn(
                "compile=True, but the data module pads each batch to its longest report "
                "(model_compiles=False), so every new length compiles again; build it with "
                "model_compiles=True (the command line links it from model.init_args.compile).",
                category=UserWarning,
            )
        if not self._compiled:
            compile_blocks(
                self.fusion,
                set(self.hparams.get("compile_modules", ())),
                self.hparams.get("compile_backend", "inductor"),
                lengths,
            )
            self._compiled = True

    def _auto_pos_weight(self, stage: str) -> None:
        """``negatives / positives`` per class from the datamodule's ``train_labels``."""
        datamodule = getattr(self.trainer, "datamodule", None)
        try:
            labels = getattr(datamodule, "train_labels", None)
        except (ValueError, KeyError):
            if stage == "fit":
                raise
            labels = None  # evaluation may still get the weights from a checkpoint
        if labels is not None and len(labels) == 0:
            labels = None  # no training split: the weights would all be 0
        if labels is None:
            if stage == "fit":
                raise InputError(
                    "pos_weight='auto' needs the datamodule to expose `train_labels` (a non-empty "
                    "[N, C] tensor of training labels); pass pos_weight as a list of floats "
                    "instead."
                )
            return
        labels = torch.as_tensor(labels, dtype=torch.float32)
        positives = labels.sum(0)
        weight = (labels.shape[0] - positives) / positives.clamp(min=1.0)
        self.pos_weight.copy_(weight.to(self.pos_weight.device))
        self._pos_weight_ready = True

    def _require_pos_weight(self) -> None:
        if not self._pos_weight_ready:
            raise InputError(
                "pos_weight='auto' has no weights for this evaluation: the datamodule exposes no "
                "`train_labels` and no checkpoint with stored weights was loaded. Pass "
                "--ckpt_path of a run trained with pos_weight='auto', a datamodule with a "
                "training split, or pos_weight as a list of floats."
            )

    def on_validation_start(self) -> None:
        """Check pending training losses for NaN/inf; fail early without ``pos_weight``."""
        self._check_nonfinite()
        self._require_pos_weight()

    def on_test_start(self) -> None:
        """Fail early when ``pos_weight='auto'`` could not be resolved."""
        self._require_pos_weight()

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
                params,
                lr=self.hparams["lr"],
                weight_decay=self.hparams["weight_decay"],
                fused=self.device.type == "cuda",
            )
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
            interval = self.hparams["lr_scheduler_interval"]
        else:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise InputError(
                    "the default warmup+cosine schedule needs a finite run length; set "
                    "trainer.max_epochs or trainer.max_steps."
                )
            total = max(1, int(total))
            warmup = self.hparams["warmup_steps"]
            warmup = int(warmup * total) if isinstance(warmup, float) else min(int(warmup), total)
            scheduler = warmup_cosine_schedule(
                optimizer, warmup, total, self.hparams["min_lr_ratio"]
            )
            self._schedule_steps = (warmup, total)
            interval = "step"
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

    def on_train_start(self) -> None:
        """After resuming with another run length, continue on the schedule of the new length.

        The default schedule's multiplier is a function of ``(step, warmup, total)`` and the
        checkpoint stores only the step, so resuming with a larger ``max_epochs``/``max_steps``
        follows the schedule of the new total; the optimizer's restored learning rate (the old
        schedule's, 0 at the end of a finished run) is replaced by the new schedule's value.
        """
        loaded, current = self._loaded_schedule, self._schedule_steps
        self._loaded_schedule = None
        if loaded is None or current is None or loaded[1] == current[1]:
            return
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return
        scheduler = configs[0].scheduler
        step = int(getattr(scheduler, "last_epoch", self.global_step))
        factors = [fn(step) for fn in getattr(scheduler, "lr_lambdas", [])]
        base_lrs = getattr(scheduler, "base_lrs", [])
        optimizer = self.trainer.optimizers[0]
        for group, base, factor in zip(optimizer.param_groups, base_lrs, factors, strict=False):
            group["lr"] = base * factor
        # what get_last_lr() reports; torch sets it only inside step()
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # type: ignore[attr-defined]
        rank_zero_warn(
            f"resuming at optimizer step {step} with a different run length: the checkpoint's "
            f"warmup+cosine schedule was planned for {loaded[1]} steps (warmup {loaded[0]}), "
            f"this run has {current[1]} (warmup {current[0]}). The schedule is rebuilt for "
            f"{current[1]} steps and continues at lr {optimizer.param_groups[0]['lr']:.3g} (the "
            f"rate the new schedule has at step {step}).",
            category=UserWarning,
        )

    # ------------------------------------------------------------------ steps
    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """Return the logits ``[B, C]`` for a batch (either modality may be missing).

        The batch's model inputs (:func:`~medllama_fusion.data.dataset.model_inputs`, presence
        masks included) go to the fusion model.
        """
        return self.fusion(**model_inputs(batch)).logits  # type: ignore[no-any-return]

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.pos_weight
        )

    @staticmethod
    def _batch_size(batch: Mapping[str, Any]) -> int:
        return int(batch["labels"].shape[0])

    def _is_logging_step(self) -> bool:
        """Whether the trainer logs this training batch (Lightning's own rule)."""
        trainer = self.trainer
        # Lightning keeps its logging-step rule (which counts stepped batches) private; asking it
        # keeps the one host sync on exactly the steps Lightning logs. The fallback is its rule.
        connector = getattr(trainer, "_logger_connector", None)
        should = getattr(connector, "should_update_logs", None)
        if not isinstance(should, bool):  # pragma: no cover - another Lightning version
            every = self._log_every_n_steps()
            should = every > 0 and (self.global_step + 1) % every == 0
        return should or bool(getattr(trainer, "fast_dev_run", False))

    def _log_every_n_steps(self) -> int:
        """The trainer's ``log_every_n_steps`` (set on the trainer at construction)."""
        return int(getattr(self.trainer, "log_every_n_steps", 50))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """BCE loss, logged without waiting for the device (see :meth:`on_before_optimizer_step`).

        ``train/loss`` goes to the loggers every step (Lightning reads it only at its logging
        steps). The progress bar shows it as ``loss``, copied to the host at the logging steps
        only: the one host sync, where Lightning syncs anyway; the bar keeps the last value in
        between.
        """
        loss = self._loss(self(batch), batch["labels"])
        self._nonfinite.record(
            loss, self.global_step, self.current_epoch, batch_idx, batch.get("ids", [])
        )
        size = self._batch_size(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=size)
        if self._is_logging_step():
            self.log(
                PROGRESS_BAR_LOSS,
                loss.detach().cpu(),
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                logger=False,
                batch_size=size,
            )
        return loss

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Stop training when a loss since the last check was NaN/inf (when a check is due).

        The flags stay on the device until a check (``nonfinite_check_interval``); the error
        names the step, epoch, batch index and example ids, and how many updates were taken.
        """
        self._nonfinite.before_optimizer_step(self.global_step, self._log_every_n_steps())

    def _check_nonfinite(self) -> None:
        """Read every pending NaN/inf flag now (one host sync when some are pending)."""
        self._nonfinite.check(self.global_step)

    def on_train_epoch_end(self) -> None:
        """Check the epoch's remaining training losses for NaN/inf."""
        self._check_nonfinite()

    def on_train_end(self) -> None:
        """Check the remaining training losses for NaN/inf."""
        self._check_nonfinite()

    def _eval_step(self, batch: dict[str, Any], metric: DefinedMultilabelAUROC) -> None:
        logits = self(batch).float()
        labels = batch["labels"].float()
        row_loss = nn.functional.binary_cross_entropy_with_logits(
            logits, labels, pos_weight=self.pos_weight, reduction="none"
        ).mean(dim=1)
        metric.update(
            torch.sigmoid(logits),
            labels.long(),
            index=batch.get("index"),
            group_index=batch.get("group_index"),
            row_loss=row_loss,
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate scores, labels, row losses and row/report indices on device."""
        self._eval_step(batch, self.val_auroc)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate scores, labels, row losses and row/report indices on device."""
        self._eval_step(batch, self.test_auroc)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Return ``{"ids": [...], "probs": Tensor[B, C]}`` and what else the batch carries.

        ``index`` (dataset rows) when the batch has it; for labelled data also ``target`` (the
        0/1 labels ``[B, C]``) and ``group_index`` (report groups ``[B]``), which
        :class:`~medllama_fusion.trainers.PredictionCSVWriter` writes so that two models'
        predictions can be compared (``medllama-fusion compare``). Lightning shards prediction
        sets without repeating samples, so each id appears once.
        """
        out = {"ids": list(batch.get("ids", [])), "probs": torch.sigmoid(self(batch).float())}
        if batch.get("index") is not None:
            out["index"] = batch["index"]
        if batch.get("labels") is not None:
            out["target"] = batch["labels"].long()
            if batch.get("group_index") is not None:
                out["group_index"] = batch["group_index"]
        return out

    def _metric(self, stage: EvaluationStage) -> DefinedMultilabelAUROC:
        if stage not in get_args(EvaluationStage):
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}.")
        return self.val_auroc if stage == "val" else self.test_auroc

    def evaluated(self, stage: EvaluationStage) -> EvaluatedRows | None:
        """The rows of the current or last ``stage`` epoch, gathered and de-duplicated.

        The validation/test metric gathers every process's scores, labels, row and report
        indices and losses and keeps each dataset row once (see
        :class:`~medllama_fusion.metrics.DefinedMultilabelAUROC`); this returns them. Lightning
        runs the callbacks' ``on_{validation,test}_epoch_end`` before this module's, so the
        first call at the end of an epoch, wherever it comes from, computes the metric (under
        distributed evaluation a collective: every process must call it, as epoch-end hooks
        do); later calls return the same rows until the next epoch of that stage starts.

        Args:
            stage: ``"val"`` or ``"test"``.

        Returns:
            The :class:`EvaluatedRows`, or ``None`` before any batch of that stage was evaluated.

        Raises:
            ValueError: For another ``stage``.
        """
        metric = self._metric(stage)
        rows = self._evaluated.get(stage)
        if rows is None and metric.update_called:
            per_class = metric.compute()
            preds, target = metric.gathered_preds, metric.gathered_target
            assert preds is not None and target is not None  # set by compute()
            rows = EvaluatedRows(
                probs=preds,
                target=target,
                index=metric.gathered_index,
                groups=metric.gathered_groups,
                auroc=per_class,
                loss=metric.gathered_loss,
            )
            self._evaluated[stage] = rows
        return rows

    def on_validation_epoch_start(self) -> None:
        """Forget the rows of the previous validation epoch."""
        self._evaluated.pop("val", None)

    def on_test_epoch_start(self) -> None:
        """Forget the rows of the previous test epoch."""
        self._evaluated.pop("test", None)

    def _log_eval(self, stage: str, rows: EvaluatedRows, mean: Tensor) -> None:
        """Log values computed from the gathered, de-duplicated rows (identical on all ranks)."""
        if rows.loss is not None:
            self.log(f"{stage}/loss", rows.loss.float(), sync_dist=False)
        self.log(f"{stage}/auroc", mean.float(), sync_dist=False)
        for name, value in zip(self.label_names, rows.auroc, strict=False):
            self.log(f"{stage}/auroc/{name}", value, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/auroc`` (mean over defined classes), ``val/auroc/<label>``."""
        rows = self.evaluated("val")
        if rows is not None:
            per_class = rows.auroc
            defined = ~torch.isnan(per_class)
            mean = (
                per_class[defined].mean() if bool(defined.any()) else per_class.new_tensor(math.nan)
            )
            self._log_eval("val", rows, mean)
            if not self.trainer.sanity_checking:
                self._last_val = rows
                self._last_val_epoch = self.current_epoch
        self.val_auroc.reset()

    def on_fit_end(self) -> None:
        """Print the per-class table of the last validation on rank 0, naming what it describes.

        The table is of the weights at the end of training, labelled with their epoch (counted
        from 0, as in checkpoint names) and the ``last`` checkpoint that holds them when a
        ``ModelCheckpoint`` saves one; the best checkpoint by the monitored metric follows with
        its path and score, since ``test``/``predict`` evaluate whichever ``--ckpt_path`` names.
        """
        last = self._last_val
        if last is None or not self.trainer.is_global_zero:
            return
        report = auroc_report(
            last.probs,
            last.target,
            self.label_names,
            per_class=last.auroc,
            num_resamples=0,
            min_positives=1,
        )
        checkpoints = [
            c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)
        ]
        where = f"epoch={self._last_val_epoch}, the last validated epoch"
        last_paths = [c.last_model_path for c in checkpoints if c.last_model_path]
        if last_paths:
            where += f"; checkpoint {last_paths[0]}"
        lines = [
            f"\nValidation AUROC at the end of training ({where}; {len(last.target)} examples):",
            format_markdown_table(report),
        ]
        for callback in checkpoints:
            if (
                callback.monitor
                and callback.best_model_path
                and callback.best_model_score is not None
            ):
                lines.append(
                    f"Best checkpoint by {callback.monitor} "
                    f"({float(callback.best_model_score):.4f}): {callback.best_model_path}"
                )
        print("\n".join(lines) + "\n", flush=True)

    def on_test_epoch_end(self) -> None:
        """Log test metrics, then build, print and save the table with bootstrap intervals.

        ``test/auroc`` is the table's macro mean: over the classes with at least
        ``min_positives`` positives and negatives. ``test/auroc_all_defined`` averages every class
        with a defined AUROC (comparable to papers that average all labels).
        """
        rows = self.evaluated("test")
        self.test_auroc.reset()
        if rows is None:
            return
        preds, target = rows.probs, rows.target
        report = auroc_report(
            preds,
            target,
            self.label_names,
            per_class=rows.auroc,
            groups=rows.groups,
            num_resamples=self.hparams["bootstrap_resamples"],
            seed=self.hparams["bootstrap_seed"],
            confidence=self.hparams["confidence"],
            min_positives=self.hparams["min_positives"],
        )
        self._log_eval("test", rows, torch.tensor(report.mean))
        self.log("test/auroc_all_defined", float(report.mean_all_defined), sync_dist=False)
        self.test_report = report
        for name, count in zip(self.label_names, report.positives, strict=False):
            self.log(f"test/positives/{name}", float(count), sync_dist=False)
        out = self._report_dir()  # on every rank: log_dir is a collective
        if not self.trainer.is_global_zero:
            return
        table = format_markdown_table(report)
        print(f"\nTest AUROC ({len(target)} examples):\n{table}\n", flush=True)
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "test_auroc.md", out / "test_auroc.csv"]
        written[0].write_text(table + "\n")
        with open(written[1], "w", newline="") as handle:
            table_rows = report.rows()
            writer = csv.DictWriter(handle, fieldnames=list(table_rows[0]))
            writer.writeheader()
            writer.writerows(table_rows)
        plot = bool(self.hparams["plot_roc"])
        note = missing_extra("plots", "roc_curves.png skipped") if plot else None
        if plot and note is None:
            written.append(out / "roc_curves.png")
            plot_roc_curves(preds, target, report, written[-1])
        names = ", ".join(path.name for path in written)
        print(f"Test report files ({names}) written to {out.resolve()}", flush=True)
        if note is not None:
            print(note, flush=True)

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
        """Replace the full state dict with the adapter state (the frozen base is not written).

        Pending training losses are checked for NaN/inf first, so no checkpoint holds weights
        updated from a non-finite loss. The data module's preprocessing record is stored too
        (:mod:`medllama_fusion.data.preprocessing`), so ``predict``, the pipeline, ``explain``
        and ``export`` preprocess exactly as training did.
        """
        self._check_nonfinite()
        checkpoint["state_dict"] = {
            k: v.detach().cpu() if v.is_cuda else v.detach()
            for k, v in self.adapter_state_dict().items()
        }
        extra: dict[str, Any] = {"pos_weight": self.pos_weight.detach().cpu().clone()}
        if self._schedule_steps is not None:
            extra["schedule_warmup_steps"], extra["schedule_total_steps"] = self._schedule_steps
        checkpoint[_CKPT_KEY] = extra
        record = getattr(getattr(self.trainer, "datamodule", None), "preprocessing", None)
        if record is not None:  # the library's data modules: inference reads it back
            checkpoint[PREPROCESSING_KEY] = record.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the labels; restore ``pos_weight`` (``"auto"``) and the schedule's length.

        Raises:
            InputError: When the checkpoint was trained on other label names than this model's
                (the data's), naming both lists.
        """
        trained = _trained_labels(checkpoint)
        if trained is not None and trained != self.label_names:
            raise InputError(
                f"the checkpoint was trained on {len(trained)} labels {trained}, but the data "
                f"has {len(self.label_names)} labels {self.label_names}; evaluate it on data with "
                "the labels it was trained on (the same label_names, in the same order)."
            )
        extra = checkpoint.get(_CKPT_KEY) or {}
        stored = extra.get("pos_weight")
        if self.pos_weight_mode == "auto" and stored is not None:
            stored = torch.as_tensor(stored, dtype=torch.float32)
            if stored.shape != self.pos_weight.shape:
                raise InputError(
                    f"the checkpoint's pos_weight has {stored.numel()} values but this model has "
                    f"{self.pos_weight.numel()} labels; load it with the labels it was trained on."
                )
            if self._pos_weight_ready and not torch.allclose(stored, self.pos_weight.cpu()):
                rank_zero_info(
                    "pos_weight='auto': using the checkpoint's weights (computed on the training "
                    "split it was trained on) instead of the ones from this datamodule."
                )
            self.pos_weight.copy_(stored.to(self.pos_weight.device))
            self._pos_weight_ready = True
        if "schedule_total_steps" in extra:
            self._loaded_schedule = (
                int(extra["schedule_warmup_steps"]),
                int(extra["schedule_total_steps"]),
            )
        else:  # checkpoints of earlier versions stored the schedule's lengths in its state
            for state in checkpoint.get("lr_schedulers") or []:
                for stored_fn in state.get("lr_lambdas") or []:
                    if isinstance(stored_fn, dict) and "total_steps" in stored_fn:
                        self._loaded_schedule = (
                            int(stored_fn.get("warmup_steps", 0)),
                            int(stored_fn["total_steps"]),
                        )

    def load_state_dict(  # type: ignore[override]
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load an adapter checkpoint (exactly the adapter keys) or a full ``state_dict()``.

        Raises:
            CheckpointMismatchError: When the tensors are neither the full set nor exactly the
                adapter set; the message names the setting that likely differs (LoRA rank,
                targets, fusion variant, labels, ...) and the first mismatched tensors.
        """
        keys = set(state_dict)
        if keys == set(self.state_dict()):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        problem = describe_mismatch(self.adapter_state_dict(), state_dict)  # keys with fusion.
        if problem:
            raise CheckpointMismatchError(problem)
        self.fusion.load_adapter_state_dict({k[len(_PREFIX) :]: v for k, v in state_dict.items()})
        return _IncompatibleKeys([], [])

    def on_fit_start(self) -> None:
        """Log the trainable parameters of the fusion model once, as a table per group."""
        self._nonfinite.reset()
        report = getattr(self.fusion, "trainable_parameter_report", None)
        if callable(report) and self.trainer.is_global_zero:
            rank_zero_info(format_parameter_report(report()))
