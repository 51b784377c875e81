"""One call from an image and a report to label probabilities: :class:`FusionPipeline`.

A pipeline holds a fusion model in eval mode and the
:class:`~medllama_fusion.data.preprocessing.Preprocessing` record it was trained with, read from
its checkpoint or exported folder::

    pipe = FusionPipeline.from_checkpoint("outputs/quickstart/<run>/checkpoints/last.ckpt")
    pipe(image="demo_data/images/CXR1_IM-0001-1001.png", report="The heart is enlarged.")
    # {"Atelectasis": 0.03, "Cardiomegaly": 0.91, ...}

Reports go through the record's :meth:`~Preprocessing.encode` (label-word masking as in
training, tokenization, truncation), images through :meth:`~Preprocessing.image` (decoded
straight to the image size as the data modules read files), and batches through the record's
collator, so a prediction here equals the one ``medllama-fusion predict`` writes for the same
sample. Images may be a file path (PNG/JPEG/TIFF/DICOM), a PIL image, a NumPy array or a tensor;
either ``image`` or ``report`` may be omitted (the model's missing-modality path), also per
sample (``None`` in a list). Lists run as one batch and return a list of dicts.

:meth:`FusionPipeline.save_pretrained` writes a self-contained folder (LoRA merged into the
frozen layers, ``model.safetensors``, ``config.json``, ``tokenizer/``) that
:meth:`FusionPipeline.from_pretrained` loads without Lightning or the original backbone source;
``push_to_hub`` uploads it (``huggingface_hub`` :class:`~huggingface_hub.ModelHubMixin`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin, snapshot_download
from torch import Tensor

from medllama_fusion.data.dataset import model_inputs
from medllama_fusion.data.images import ImageInput
from medllama_fusion.data.preprocessing import PREPROCESSING_KEY, Preprocessing
from medllama_fusion.errors import InputError
from medllama_fusion.inference.checkpoints import load_checkpoint
from medllama_fusion.inference.export import (
    EXPORT_FORMAT,
    TOKENIZER_DIR,
    WEIGHTS_NAME,
    build_exported_model,
    export_config,
    load_weights,
    merge_lora,
    save_weights,
)
from medllama_fusion.models import FusionModel
from medllama_fusion.trainers.operating_points import thresholds_from_checkpoint

__all__ = ["FusionPipeline", "export_checkpoint", "preprocessing_from_checkpoint"]


def preprocessing_from_checkpoint(checkpoint: Mapping[str, Any], source: str) -> Preprocessing:
    """The preprocessing record a checkpoint carries.

    Args:
        checkpoint: A checkpoint dict (:func:`.load_checkpoint`).
        source: The file, named in errors.

    Returns:
        The record.

    Raises:
        InputError: When the checkpoint carries none (written outside a library data module).
    """
    stored = checkpoint.get(PREPROCESSING_KEY)
    if not isinstance(stored, Mapping):
        raise InputError(
            f"{source} carries no preprocessing record: it was trained without one of this "
            "library's data modules (or by an older version). Build the pipeline yourself: "
            "FusionPipeline(model, Preprocessing(...).complete(label_names=...))."
        )
    return Preprocessing.from_dict(stored, source=source)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


class FusionPipeline(ModelHubMixin):
    """A trained fusion model with its preprocessing, ready for inference (eval mode).

    Build it with :meth:`from_checkpoint` (a Lightning checkpoint of ``fit``) or
    :meth:`from_pretrained` (a folder written by :meth:`save_pretrained`, or a hub repo).

    Args:
        model: The fusion model (put in eval mode).
        preprocessing: The complete record it was trained with (label names included).
        thresholds: Optional per-label decision thresholds (``{label: threshold}``).

    Raises:
        InputError: When the record names no labels or another number than the model has.
    """

    def __init__(
        self,
        model: FusionModel,
        preprocessing: Preprocessing,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        if len(preprocessing.label_names) != model.num_labels:
            raise InputError(
                f"the preprocessing record names {len(preprocessing.label_names)} labels "
                f"{list(preprocessing.label_names)} but the model has {model.num_labels} outputs."
            )
        if "text" in preprocessing.modalities:
            size = len(preprocessing.loaded_tokenizer)
            model.backbone.check_vocabulary(size, f"tokenizer {preprocessing.tokenizer!r}")
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.thresholds = dict(thresholds) if thresholds else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        map_location: str | torch.device | None = None,
        weights_only: bool = True,
    ) -> FusionPipeline:
        """Load a ``fit`` checkpoint: the model, its preprocessing record and its thresholds.

        Args:
            checkpoint: Path of a Lightning checkpoint written by ``medllama-fusion fit``.
            map_location: Device to load onto; default CUDA when available, else CPU.
            weights_only: Refuse a file that asks to run code when opened (default). ``False``
                opens it with full trust: only for your own older files.

        Returns:
            The pipeline (model in eval mode).

        Raises:
            InputError: When the checkpoint cannot be opened or carries no record.
        """
        from medllama_fusion.trainers import FusionClassifier

        path = Path(checkpoint)
        raw = load_checkpoint(path, weights_only=weights_only)
        record = preprocessing_from_checkpoint(raw, str(path))
        if map_location is None:
            map_location = "cuda" if torch.cuda.is_available() else "cpu"
        module = FusionClassifier.load_from_checkpoint(
            path, map_location=map_location, weights_only=weights_only
        )
        return cls(module.fusion, record, thresholds_from_checkpoint(raw))

    # ------------------------------------------------------------------ what it holds
    @property
    def label_names(self) -> list[str]:
        """Output label names."""
        return list(self.preprocessing.label_names)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer of the record."""
        return self.preprocessing.loaded_tokenizer

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ preprocessing
    def make_batch(
        self,
        image: ImageInput | Sequence[ImageInput | None] | None = None,
        report: str | Sequence[str | None] | None = None,
    ) -> dict[str, Any]:
        """Build the model batch exactly as the data modules do (on the model's device).

        Args:
            image: One image or a list of images (``None``: no image, for all or one sample).
            report: One report or a list of reports (``None``: no report).

        Returns:
            The collated batch (``input_ids``, ``attention_mask``, ``text_present``,
            ``pixel_values``, ``image_present``, as the record's modalities say).

        Raises:
            InputError: When both are missing, the list lengths differ, a report is not a
                string, or a modality the model was not trained on is given.
        """
        images, reports = _as_list(image), _as_list(report)
        if images is None and reports is None:
            raise InputError("pass image=..., report=... or both.")
        if images is not None and reports is not None and len(images) != len(reports):
            raise InputError(
                f"got {len(images)} images but {len(reports)} reports; pass one report per image."
            )
        prep = self.preprocessing
        for name, given in (("image", images), ("text", reports)):
            if (
                given is not None
                and any(v is not None for v in given)
                and name not in prep.modalities
            ):
                raise InputError(
                    f"this model was trained on {list(prep.modalities)} only; do not pass "
                    f"{'image' if name == 'image' else 'report'}=."
                )
        count = len(images if images is not None else reports or [])
        items: list[dict[str, Any]] = [
            {"id": str(i), "index": i, "group_index": i} for i in range(count)
        ]
        if "text" in prep.modalities:
            texts = reports or [None] * count
            for text in texts:
                if text is not None and not isinstance(text, str):
                    raise InputError(f"report must be a string, got {type(text).__name__}.")
            present = [bool(text and text.strip()) for text in texts]
            ids = prep.encode([text or "" for text in texts])
            for item, seq, has in zip(items, ids, present, strict=True):
                item["input_ids"] = torch.tensor(seq if has else [], dtype=torch.long)
                item["text_present"] = has
        if "image" in prep.modalities:
            given = images or [None] * count
            size = prep.image_size
            for item, picture in zip(items, given, strict=True):
                has = picture is not None
                item["pixel_values"] = (
                    prep.image(picture)
                    if has
                    else torch.zeros((1, size, size), dtype=torch.float32)
                )
                item["image_present"] = has
        batch = prep.collator()(items)
        device = self.device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def logits(self, batch: Mapping[str, Any]) -> Tensor:
        """Logits ``[B, C]`` (float32) of a batch from :meth:`make_batch` (eval mode)."""
        self.model.eval()
        inputs = model_inputs(batch)
        if inputs.get("pixel_values") is not None:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.backbone.dtype)
        return self.model(**inputs).logits.float()

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput | None] | None = None,
        report: str | Sequence[str | None] | None = None,
    ) -> dict[str, float] | list[dict[str, float]]:
        """Return ``{label: probability}`` (a list of them for list inputs).

        Args:
            image: An image (path, PIL, array, tensor) or a list of them.
            report: A report string or a list of them.

        Returns:
            Probabilities per label; a list when ``image`` or ``report`` is a list.
        """
        probs = torch.sigmoid(self.logits(self.make_batch(image, report))).cpu().tolist()
        rows = [dict(zip(self.label_names, row, strict=True)) for row in probs]
        listed = isinstance(image, (list, tuple)) or isinstance(report, (list, tuple))
        return rows if listed else rows[0]

    def decide(self, probabilities: Mapping[str, float]) -> dict[str, int]:
        """Apply the stored thresholds: ``{label: 0/1}``.

        Raises:
            InputError: When the pipeline has no thresholds.
        """
        if not self.thresholds:
            raise InputError(
                "this model has no stored thresholds; train or test it with the "
                "OperatingPoints callback to choose them on validation."
            )
        return {k: int(p >= self.thresholds[k]) for k, p in probabilities.items()}

    # ------------------------------------------------------------------ export (hub mixin)
    def _save_pretrained(self, save_directory: Path) -> None:
        """Merge LoRA and write weights, ``config.json`` and the tokenizer (hub mixin hook)."""
        folder = Path(save_directory)
        merge_lora(self.model)
        save_weights(self.model, folder / WEIGHTS_NAME)
        record = self.preprocessing.to_dict()
        if "text" in self.preprocessing.modalities:
            self.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
            record["tokenizer"] = TOKENIZER_DIR
        config = {
            "format": EXPORT_FORMAT,
            "fusion": export_config(self.model),
            PREPROCESSING_KEY: record,
            "decision_thresholds": self.thresholds,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        **_: Any,
    ) -> FusionPipeline:
        """Load an exported folder (or hub repo) without Lightning (hub mixin hook)."""
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    repo_id=model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                )
            )
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if config.get("format") != EXPORT_FORMAT:
            raise InputError(
                f"{folder} is not a medllama-fusion export (config.json format is "
                f"{config.get('format')!r}, expected {EXPORT_FORMAT!r}); export it again with "
                "this version."
            )
        stored = dict(config[PREPROCESSING_KEY])
        if stored.get("tokenizer") == TOKENIZER_DIR:
            stored["tokenizer"] = str(folder / TOKENIZER_DIR)
        record = Preprocessing.from_dict(stored, source=str(config_file))
        model = build_exported_model(config["fusion"])
        load_weights(model, folder / WEIGHTS_NAME)
        model.to(map_location)
        return cls(model, record, thresholds=config.get("decision_thresholds"))


def export_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    push_to_hub: str | None = None,
    weights_only: bool = True,
) -> Path:
    """Export a ``fit`` checkpoint to a self-contained folder (see :mod:`.export`).

    Args:
        checkpoint: The ``.ckpt`` file.
        output_dir: Folder to write.
        push_to_hub: Also upload to this hub repo id.
        weights_only: Refuse a file that asks to run code when opened (default).

    Returns:
        ``output_dir`` as a path.
    """
    pipe = FusionPipeline.from_checkpoint(checkpoint, map_location="cpu", weights_only=weights_only)
    pipe.save_pretrained(output_dir)
    if push_to_hub:
        pipe.push_to_hub(push_to_hub)
    return Path(output_dir)
