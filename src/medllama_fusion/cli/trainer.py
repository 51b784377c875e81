"""The command line's trainer: Lightning's plus ``explain``, ``export`` and ``optimize``.

LightningCLI builds one subcommand per ``Trainer`` method named in
:meth:`~medllama_fusion.cli.main.FusionCLI.subcommands`, with that method's arguments, so these
three parse, take ``--config``, ``--ckpt_path last``, ``--print_config`` and ``--help`` exactly
like ``fit``, ``validate``, ``test`` and ``predict``. Each method uses the model and data module
the command line built from the configuration, and the checkpoint's weights, preprocessing
record and thresholds (opened without running code from it, see
:mod:`medllama_fusion.inference.checkpoints`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from medllama_fusion.errors import InputError
from medllama_fusion.extras import require
from medllama_fusion.inference.checkpoints import load_checkpoint
from medllama_fusion.inference.pipeline import FusionPipeline, preprocessing_from_checkpoint
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


class FusionTrainer(Trainer):
    """Lightning's ``Trainer`` with the library's extra subcommands (see the module docstring)."""

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
