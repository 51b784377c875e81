"""The command line's trainer: Lightning's plus ``audit``, ``explain``, ``export``, ``optimize``.

LightningCLI builds one subcommand per ``Trainer`` method named in
:meth:`~medllama_fusion.cli.main.FusionCLI.subcommands`, with that method's arguments, so these
three parse, take ``--config``, ``--ckpt_path last``, ``--print_config`` and ``--help`` exactly
like ``fit``, ``validate``, ``test`` and ``predict``. Each method uses the model and data module
the command line built from the configuration, and the checkpoint's weights, preprocessing
record and thresholds (opened without running code from it, see
:mod:`medllama_fusion.inference.checkpoints`). ``test --audit true`` runs the audit after the
test, on the tested model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.trainer.trainer import _EVALUATE_OUTPUT, _PATH
from lightning.pytorch.utilities.types import EVAL_DATALOADERS
from torch import nn

from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.errors import InputError
from medllama_fusion.extras import require
from medllama_fusion.inference.audit import AUDIT_CONDITIONS, AuditCondition, AuditReport, audit
from medllama_fusion.inference.checkpoints import load_checkpoint
from medllama_fusion.inference.pipeline import FusionPipeline, preprocessing_from_checkpoint
from medllama_fusion.metrics import DEFAULT_MIN_POSITIVES
from medllama_fusion.trainers import FusionClassifier
from medllama_fusion.trainers.operating_points import thresholds_from_checkpoint

__all__ = ["FusionTrainer"]

PROG = "medllama-fusion"


def _require_checkpoint(ckpt_path: str | Path | None, subcommand: str) -> Path:
    if not ckpt_path:
        raise InputError(
            f"{subcommand} needs --ckpt_path: a checkpoint file, or `last` for the last "
            "checkpoint of the newest run of this configuration."
        )
    return Path(ckpt_path)


def _pipeline(
    model: LightningModule, ckpt_path: Path, weights_only: bool | None, subcommand: str
) -> FusionPipeline:
    """The model the command line built, with the checkpoint's weights, record and thresholds."""
    if not isinstance(model, FusionClassifier):
        raise InputError(
            f"{subcommand} works on FusionClassifier models; the configuration builds a "
            f"{type(model).__name__}."
        )
    raw = load_checkpoint(ckpt_path, weights_only=weights_only is not False)
    model.on_load_checkpoint(raw)
    model.load_state_dict(raw["state_dict"])
    record = preprocessing_from_checkpoint(raw, str(ckpt_path))
    return FusionPipeline(model.fusion, record, thresholds_from_checkpoint(raw))


def _audit_split(datamodule: LightningDataModule | None, split: str) -> Any:
    """The labelled split ``split`` of a file-based data module, set up."""
    if not isinstance(datamodule, FusionDataModule):
        raise InputError(
            "audit needs a FusionDataModule data section (OpenI, CSV or demo files); a "
            f"{type(datamodule).__name__} cannot re-encode the reports with masking."
        )
    datamodule.setup("test")
    dataset = datamodule.datasets[split]
    if len(dataset) == 0:
        raise InputError(f"the {split} split of {datamodule.source_description()} is empty.")
    return dataset


class FusionTrainer(Trainer):
    """Lightning's ``Trainer`` with the library's extra subcommands (see the module docstring)."""

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: EVAL_DATALOADERS | LightningDataModule | None = None,
        ckpt_path: _PATH | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
        audit: bool = False,
    ) -> _EVALUATE_OUTPUT:
        """Lightning's test; with ``audit=True`` the audit of the tested model follows.

        Args:
            model: The model.
            dataloaders: Test dataloaders (or a data module).
            ckpt_path: The checkpoint to test, or ``last`` (the newest run of this
                configuration).
            verbose: Print the test results.
            datamodule: The data module.
            weights_only: ``false`` opens a checkpoint that asks to run code (your own older
                files only).
            audit: Also run the modality and leakage audit (see :meth:`audit`) on the test
                split, with the defaults of the ``audit`` subcommand.

        Returns:
            Lightning's test results.
        """
        results = super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)
        if audit:
            tested = model if model is not None else self.lightning_module
            if not isinstance(tested, FusionClassifier):
                raise InputError("test --audit works on FusionClassifier models.")
            data = dataloaders if isinstance(dataloaders, LightningDataModule) else datamodule
            dataset = _audit_split(data, "test")
            self._run_audit(
                tested.fusion,
                dataset,
                data.preprocessing,  # type: ignore[union-attr]
                "test",
                batch_size=int(data.loader.batch_size),  # type: ignore[union-attr]
                min_positives=int(tested.hparams["min_positives"]),
            )
        return results

    def audit(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
        split: Literal["train", "val", "test"] = "test",
        conditions: list[AuditCondition] | None = None,
        contribution_samples: int | None = 100,
        batch_size: int | None = None,
        confidence: float = 0.95,
        min_positives: int = DEFAULT_MIN_POSITIVES,
        output_dir: str | None = None,
    ) -> AuditReport:
        """Where the model's AUROC comes from: each modality removed, label words masked.

        Scores the split with both modalities, without the image, without the report and with
        the label words masked (each masking mode), each against the full model with a paired
        interval and p-value, and measures the occlusion-based modality contribution of
        arXiv 2503.01904. Writes ``audit.md`` and ``audit.csv``.

        Args:
            model: The model (built from the configuration).
            datamodule: The data module the split comes from.
            ckpt_path: The checkpoint, or ``last`` (the newest run of this configuration).
            weights_only: ``false`` opens a checkpoint that asks to run code (your own older
                files only).
            split: The labelled split to audit.
            conditions: Inputs to score (default all; ``full`` is always scored).
            contribution_samples: Samples for the modality contribution (``0`` skips it,
                ``null`` measures every sample of the split).
            batch_size: Batch size (default the data module's).
            confidence: Confidence level of the paired intervals.
            min_positives: Fewest positive and negative reports of a class in the macro mean
                (as in ``test``'s table).
            output_dir: Folder of ``audit.md`` and ``audit.csv`` (default the run folder).

        Returns:
            The audit.
        """
        path = _require_checkpoint(ckpt_path, "audit")
        pipe = _pipeline(model, path, weights_only, "audit")
        dataset = _audit_split(datamodule, split)
        return self._run_audit(
            pipe.model,
            dataset,
            pipe.preprocessing,
            split,
            conditions,
            contribution_samples,
            batch_size or int(datamodule.loader.batch_size),  # type: ignore[union-attr]
            confidence,
            min_positives,
            output_dir,
        )

    def _run_audit(
        self,
        fusion: nn.Module,
        dataset: Any,
        preprocessing: Preprocessing,
        split: str,
        conditions: list[AuditCondition] | None = None,
        contribution_samples: int | None = 100,
        batch_size: int = 16,
        confidence: float = 0.95,
        min_positives: int = DEFAULT_MIN_POSITIVES,
        output_dir: str | None = None,
    ) -> AuditReport:
        device = self.strategy.root_device
        before = next(fusion.parameters()).device
        fusion.to(device)
        try:
            report = audit(
                fusion,  # type: ignore[arg-type]
                dataset,
                preprocessing,
                tuple(conditions or AUDIT_CONDITIONS),  # type: ignore[arg-type]
                contribution_samples,
                batch_size,
                confidence,
                min_positives,
            )
        finally:
            fusion.to(before)
        folder = Path(output_dir or self.log_dir or self.default_root_dir)
        files = report.write(folder)
        if self.is_global_zero:
            print(f"Audit of the {split} split ({len(dataset)} samples):", flush=True)
            print(report.summary(), flush=True)
            print(f"{PROG}: audit written to {', '.join(str(f.resolve()) for f in files)}")
        return report

    def explain(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
        split: Literal["train", "val", "test"] = "test",
        ids: list[str] | None = None,
        first: int = 4,
        labels: list[str] | None = None,
        output_dir: str = "explanations",
        n_steps: int = 32,
    ) -> list[Any]:
        """Token and image attributions of a checkpoint's predictions (HTML + PNG).

        Integrated Gradients (Captum) over the report's tokens and the image's patches of
        chosen samples of a split; writes ``<id>.html`` and ``<id>.png`` per sample. Needs the
        ``explain`` extra.

        Args:
            model: The model (built from the configuration).
            datamodule: The data module the samples come from.
            ckpt_path: The checkpoint, or ``last`` (the newest run of this configuration).
            weights_only: ``false`` opens a checkpoint that asks to run code (your own older
                files only).
            split: The split the samples come from.
            ids: Sample ids to explain.
            first: Explain the first N samples of the split (without ``ids``).
            labels: Labels to explain; default each sample's most probable label.
            output_dir: Folder of the HTML pages and PNG overlays.
            n_steps: Integration steps.

        Returns:
            One explanation per sample.
        """
        require("explain", "explain")
        from medllama_fusion.inference.explain import explain_samples

        path = _require_checkpoint(ckpt_path, "explain")
        if datamodule is None:
            raise InputError("explain needs the data section of the configuration (--config).")
        pipe = _pipeline(model, path, weights_only, "explain")
        results = explain_samples(pipe, datamodule, split, ids, first, labels, output_dir, n_steps)
        for item in results:
            print(f"{item.id}: {item.html}" + (f", {item.png}" if item.png else ""), flush=True)
        print(f"{PROG}: explanations written to {Path(output_dir).resolve()}", flush=True)
        return results

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
        output_dir: str = "exported_model",
        push_to_hub: str | None = None,
    ) -> Path:
        """Merge LoRA and write a self-contained model folder (save_pretrained layout).

        The folder (``model.safetensors``, ``config.json`` with the preprocessing record,
        ``tokenizer/``) loads with ``FusionPipeline.from_pretrained`` without Lightning; it is
        the format to share a model in (opening it never runs code).

        Args:
            model: The model (built from the configuration).
            datamodule: Unused (the checkpoint carries the preprocessing).
            ckpt_path: The checkpoint, or ``last`` (the newest run of this configuration).
            weights_only: ``false`` opens a checkpoint that asks to run code (your own older
                files only).
            output_dir: Folder to write.
            push_to_hub: Also upload the folder to this Hugging Face Hub repo id.

        Returns:
            The folder.
        """
        path = _require_checkpoint(ckpt_path, "export")
        pipe = _pipeline(model, path, weights_only, "export")
        pipe.model.cpu()
        pipe.save_pretrained(output_dir)
        if push_to_hub:
            pipe.push_to_hub(push_to_hub)
        out = Path(output_dir).resolve()
        print(f"{PROG}: exported model written to {out}", flush=True)
        return out

    def optimize(
        self,
        model: LightningModule | None,
        datamodule: LightningDataModule,
        output_dir: str,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
        num_workers: int | None = None,
        chunk_bytes: str = "64MB",
        start_method: Literal["spawn", "fork", "forkserver"] | None = None,
    ) -> dict[str, Any]:
        """Write a run's data once as a sharded stream for multi-node training (LitData).

        Curates, splits, tokenizes and resizes the data module's data once and writes every
        split, with its preprocessing record, as a stream that ``StreamingDataModule`` reads on
        any number of nodes (``--data StreamingDataModule --data.input_dir <output_dir>``).
        The model is not built. Needs the ``streaming`` extra.

        Args:
            model: Not used (not built).
            datamodule: The data module whose data is written.
            output_dir: New or empty folder, or ``s3://bucket/prefix``.
            ckpt_path: Not used.
            weights_only: Not used.
            num_workers: Writer processes (default: one per CPU).
            chunk_bytes: Chunk size.
            start_method: Start method of the writer processes (default: spawn).

        Returns:
            The stream's metadata.
        """
        from medllama_fusion.data.streaming import require_litdata, write_streaming_dataset

        require_litdata()
        start = time.perf_counter()
        datamodule.prepare_data()  # download, or write the demo, as fit would
        metadata = write_streaming_dataset(
            datamodule,  # type: ignore[arg-type]
            output_dir,
            num_workers=num_workers,
            chunk_bytes=chunk_bytes,
            start_method=start_method,
        )
        shown = output_dir if "://" in output_dir else str(Path(output_dir).resolve())
        counts = ", ".join(f"{name} {count}" for name, count in metadata["counts"].items())
        print(
            f"{PROG}: stream written to {shown} ({counts} samples; "
            f"{time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        return metadata
