"""One call from an image and a report to label probabilities: :class:`FusionPipeline`.

A pipeline holds a fusion model in eval mode plus exactly the preprocessing of the data module
that trained it (tokenizer, ``max_length``, image size and normalisation, label-word masking)::

    pipe = FusionPipeline.from_checkpoint("outputs/quickstart/.../checkpoints/last.ckpt")
    pipe(image="demo_data/images/CXR1_IM-0001-1001.png", report="The heart is enlarged.")
    # {"Atelectasis": 0.03, "Cardiomegaly": 0.91, ...}

Images may be a file path (PNG/JPEG/TIFF/DICOM), a PIL image, a NumPy array or a tensor
(``[H, W]`` or ``[1, H, W]``; uint8 is divided by 255, floats are taken as ``[0, 1]``); either
``image`` or ``report`` may be omitted (the model's missing-modality path). Lists run as one
batch and return a list of dicts.

:meth:`FusionPipeline.save_pretrained` writes a self-contained folder (LoRA merged into the
frozen layers, ``model.safetensors``, ``config.json``, ``tokenizer/``) that
:meth:`FusionPipeline.from_pretrained` loads without Lightning or the original backbone source;
``push_to_hub`` uploads it (``huggingface_hub`` :class:`~huggingface_hub.ModelHubMixin`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from huggingface_hub import ModelHubMixin, snapshot_download
from torch import Tensor
from torchvision.transforms.v2.functional import resize

from medllama_fusion.data.images import (
    build_image_transform,
    read_resized,
    resize_pil_image,
)
from medllama_fusion.errors import InputError
from medllama_fusion.models import FusionModel
from medllama_fusion.trainers.callbacks import RUN_CONFIG_KEY
from medllama_fusion.trainers.operating_points import thresholds_from_checkpoint

__all__ = [
    "FusionPipeline",
    "ImageInput",
    "find_run_config",
    "run_datamodule",
]

ImageInput = Any
"""A path (``str``/``Path``), a PIL image, a NumPy array or a tensor."""

EXPORT_FORMAT = "medllama-fusion/1"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


def find_run_config(checkpoint: str | Path) -> Path | None:
    """Return the ``config.yaml`` LightningCLI saved for the run of ``checkpoint`` (or None).

    LightningCLI writes the parsed configuration to ``<log_dir>/config.yaml`` and checkpoints to
    ``<log_dir>/checkpoints/``; the checkpoint's folder and its parent are searched.

    Args:
        checkpoint: Checkpoint path.

    Returns:
        The config path, or ``None`` when there is none.
    """
    path = Path(checkpoint).resolve()
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "config.yaml"
        if candidate.is_file():
            return candidate
    return None


def _resolve_relative(value: Any, bases: Sequence[Path]) -> Any:
    """Resolve a relative path of a saved config against the cwd, then each of ``bases``."""
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    if Path(value).exists():
        return value
    for folder in bases:
        if (folder / value).exists():
            return str(folder / value)
    return value


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        module_name, name = "medllama_fusion", class_path
    return getattr(importlib.import_module(module_name), name)  # type: ignore[no-any-return]


def _datamodule_from_config(config: Mapping[str, Any], source: str, bases: Sequence[Path]) -> Any:
    """Build (without ``setup``) the data module a saved LightningCLI config describes.

    Args:
        config: The parsed run configuration.
        source: Where it came from, for messages.
        bases: Folders that relative data paths may be relative to (after the cwd).
    """
    data = config.get("data")
    if not isinstance(data, Mapping) or "class_path" not in data:
        raise InputError(
            f"{source} has no `data: class_path:` section; pass the training config with "
            "`config=` (the YAML given to `fit`)."
        )
    import medllama_fusion.datamodules  # noqa: F401  (short class names)

    init_args = {
        k: _resolve_relative(v, bases) for k, v in dict(data.get("init_args") or {}).items()
    }
    init_args.pop("demo", None)  # never write demo data from a prediction
    cls = _import_class(str(data["class_path"]))
    return cls(**init_args)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU, as an :class:`InputError` when it is unreadable."""
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist; pass the .ckpt file of a run.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any unpickling/zip failure means "not a checkpoint"
        raise InputError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); pass the "
            ".ckpt file written by `medllama-fusion fit`."
        ) from error
    if not isinstance(loaded, dict):
        raise InputError(f"{path} is not a Lightning checkpoint (no dict inside).")
    return loaded


def run_datamodule(
    checkpoint: str | Path,
    config: str | Path | None = None,
    loaded: Mapping[str, Any] | None = None,
) -> Any:
    """Rebuild (without ``setup``) the data module of the run that wrote ``checkpoint``.

    The configuration comes from ``config`` when given, else from the checkpoint (the CLI
    stores it there), else from ``config.yaml`` next to the checkpoint's folder.

    Args:
        checkpoint: Checkpoint path.
        config: The run's config YAML, overriding the stored one.
        loaded: The checkpoint already loaded with ``torch.load`` (read from disk when None).

    Returns:
        The data module.

    Raises:
        InputError: When no configuration can be found or it has no ``data`` section.
    """
    path = Path(checkpoint)
    if loaded is None:
        loaded = _load_checkpoint(path)
    stored = loaded.get(RUN_CONFIG_KEY)
    if config is None and isinstance(stored, Mapping) and stored.get("yaml"):
        settings = yaml.safe_load(str(stored["yaml"])) or {}
        source = f"the configuration stored in {path}"
        bases = [Path(str(stored.get("workdir") or ".")), *path.resolve().parents]
    else:
        config_path = Path(config) if config is not None else find_run_config(path)
        if config_path is None or not config_path.is_file():
            raise InputError(
                f"{path} holds no run configuration and no config.yaml is next to it (looked in "
                "its folder and the parent); pass config=<the YAML used for fit>."
            )
        settings = yaml.safe_load(config_path.read_text()) or {}
        source = str(config_path)
        bases = list(config_path.resolve().parents)
    return _datamodule_from_config(settings, source, bases)


def _to_resized(image: ImageInput, size: int) -> Tensor:
    """Turn one image input into the resized ``[1, size, size]`` image the data modules read.

    Files go through :func:`~medllama_fusion.data.images.read_resized`; PIL images and 8- or
    16-bit arrays through the same Pillow resize in their integer type, so every form of the same
    8-bit picture gives the same tensor. Float arrays (values in ``[0, 1]``) are resized as
    floats.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        return read_resized(image, size)
    if isinstance(image, Image.Image):
        return resize_pil_image(image, size)
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"image of type {type(image).__name__} is not supported; pass a file path, a PIL "
            "image, a NumPy array or a tensor."
        )
    array = np.squeeze(image)
    colour = array.ndim == 3 and array.shape[-1] in (3, 4)
    if colour and array.dtype == np.uint8:  # RGB(A) → luminance, as Pillow reads a colour file
        return resize_pil_image(Image.fromarray(np.ascontiguousarray(array[..., :3])), size)
    if colour:
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], "float32")
    if array.ndim != 2:
        raise InputError(
            f"image array has shape {tuple(image.shape)}; pass a 2-D grayscale array "
            "[H, W] (or [1, H, W], or [H, W, 3] RGB)."
        )
    if array.dtype in (np.uint8, np.uint16):
        return resize_pil_image(Image.fromarray(np.ascontiguousarray(array)), size)
    unit = torch.from_numpy(np.clip(array.astype(np.float32), 0.0, 1.0))[None]
    return resize(unit, [size, size], antialias=True)


class FusionPipeline(ModelHubMixin):
    """A trained fusion model with its preprocessing, ready for inference (eval mode).

    Build it with :meth:`from_checkpoint` (a Lightning checkpoint of ``fit``) or
    :meth:`from_pretrained` (a folder written by :meth:`save_pretrained`, or a hub repo).

    Args:
        model: The fusion model (put in eval mode).
        tokenizer: The tokenizer the model was trained with.
        label_names: Output label names.
        max_length: Maximum report length in tokens.
        image_size: Image side length the model expects.
        image_mean: Image normalisation mean.
        image_std: Image normalisation std.
        mask_label_words: Remove label words from reports (as in training).
        thresholds: Optional per-label decision thresholds (``{label: threshold}``).
    """

    def __init__(
        self,
        model: FusionModel,
        tokenizer: Any,
        label_names: Sequence[str],
        max_length: int = 256,
        image_size: int = 224,
        image_mean: float = 0.5,
        image_std: float = 0.5,
        mask_label_words: bool = False,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = int(max_length)
        self.image_size = int(image_size)
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.mask_label_words = bool(mask_label_words)
        self.thresholds = dict(thresholds) if thresholds else None
        self.transform = build_image_transform(
            self.image_size, train=False, mean=self.image_mean, std=self.image_std
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        config: str | Path | None = None,
        map_location: str | torch.device | None = None,
    ) -> FusionPipeline:
        """Load a ``fit`` checkpoint and the preprocessing of its data module.

        Args:
            checkpoint: Path of a Lightning checkpoint written by ``medllama-fusion fit``.
            config: The run's config YAML; default the configuration the CLI stored in the
                checkpoint, else ``config.yaml`` next to the checkpoint's folder. Relative data
                paths are resolved against the current folder, then the run's working folder
                and the checkpoint's parent folders.
            map_location: Device to load onto; default the device it was saved from when
                available, else CPU.

        Returns:
            The pipeline (model in eval mode, on the checkpoint's dtype).

        Raises:
            InputError: When the checkpoint or its config cannot be found.
        """
        from medllama_fusion.trainers import FusionClassifier

        path = Path(checkpoint)
        raw = _load_checkpoint(path)
        datamodule = run_datamodule(path, config, raw)
        if map_location is None:
            map_location = "cuda" if torch.cuda.is_available() else "cpu"
        module = FusionClassifier.load_from_checkpoint(path, map_location=map_location)
        return cls.from_parts(
            module.fusion, datamodule, module.label_names, thresholds_from_checkpoint(raw)
        )

    @classmethod
    def from_parts(
        cls,
        model: FusionModel,
        datamodule: Any,
        label_names: Sequence[str] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> FusionPipeline:
        """Build a pipeline from a model and the (not necessarily set-up) data module.

        Args:
            model: The fusion model.
            datamodule: A :class:`~medllama_fusion.datamodules.FusionDataModule`.
            label_names: Label names; default the data module's.
            thresholds: Optional per-label thresholds.

        Returns:
            The pipeline.
        """
        return cls(
            model,
            datamodule.tokenizer,
            list(label_names or datamodule.label_names),
            max_length=datamodule.max_length,
            image_size=datamodule.image_size,
            image_mean=datamodule.image_mean,
            image_std=datamodule.image_std,
            mask_label_words=datamodule.mask_label_words,
            thresholds=thresholds,
        )

    # ------------------------------------------------------------------ preprocessing
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def preprocess_image(self, image: ImageInput) -> Tensor:
        """Return the normalised ``FloatTensor [1, H, W]`` the model sees for one image.

        A file is read exactly as the data modules read it (decoded straight to
        ``image_size``, :func:`~medllama_fusion.data.images.read_resized`), so a
        prediction here equals the one ``medllama-fusion predict`` writes for that file; a PIL
        image or an 8/16-bit array of the same picture gives the same tensor.
        """
        return self.transform(_to_resized(image, self.image_size))

    def preprocess_text(self, report: str) -> list[int]:
        """Return the token ids (at most ``max_length``) the model sees for one report."""
        if not isinstance(report, str):
            raise InputError(f"report must be a string, got {type(report).__name__}.")
        if self.mask_label_words:
            from medllama_fusion.datamodules.base import _mask_generic_label_words

            report = _mask_generic_label_words(report, self.label_names)
        encoded = self.tokenizer(
            report, truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return list(encoded["input_ids"])

    def make_batch(
        self,
        image: ImageInput | Sequence[ImageInput] | None = None,
        report: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Build the model batch (``input_ids``, ``attention_mask``, ``pixel_values``).

        Args:
            image: One image or a list of images (or ``None`` for text only).
            report: One report or a list of reports (or ``None`` for image only).

        Returns:
            The batch on the model's device.

        Raises:
            InputError: When both are missing or the list lengths differ.
        """
        if image is None and report is None:
            raise InputError("pass image=..., report=... or both.")
        images = (
            None
            if image is None
            else (list(image) if isinstance(image, (list, tuple)) else [image])
        )
        reports = (
            None
            if report is None
            else (list(report) if isinstance(report, (list, tuple)) else [report])
        )
        if images is not None and reports is not None and len(images) != len(reports):
            raise InputError(
                f"got {len(images)} images but {len(reports)} reports; pass one report per image."
            )
        batch: dict[str, Any] = {}
        device = self.device
        if reports is not None:
            ids = [self.preprocess_text(cast(str, r)) for r in reports]
            width = max(1, max(len(i) for i in ids))
            pad = self.tokenizer.pad_token_id
            pad = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for row, seq in enumerate(ids):
                input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            batch["input_ids"], batch["attention_mask"] = input_ids.to(device), mask.to(device)
        if images is not None:
            pixels = torch.stack([self.preprocess_image(i) for i in images])
            batch["pixel_values"] = pixels.to(device=device, dtype=self.model.backbone.dtype)
        return batch

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def logits(self, batch: Mapping[str, Any]) -> Tensor:
        """Logits ``[B, C]`` (float32) of a batch from :meth:`make_batch` (eval mode)."""
        self.model.eval()
        out = self.model(
            input_ids=batch.get("input_ids"),
            attention_mask=batch.get("attention_mask"),
            pixel_values=batch.get("pixel_values"),
        )
        return out.logits.float()

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput] | None = None,
        report: str | Sequence[str] | None = None,
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
        return (
            rows
            if isinstance(image, (list, tuple)) or isinstance(report, (list, tuple))
            else rows[0]
        )

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
        from medllama_fusion.inference.export import export_config, merge_lora, save_weights

        merge_lora(self.model)
        save_weights(self.model, Path(save_directory) / WEIGHTS_NAME)
        self.tokenizer.save_pretrained(str(Path(save_directory) / TOKENIZER_DIR))
        config = {
            "format": EXPORT_FORMAT,
            "fusion": export_config(self.model),
            "labels": self.label_names,
            "preprocessing": {
                "max_length": self.max_length,
                "image_size": self.image_size,
                "image_mean": self.image_mean,
                "image_std": self.image_std,
                "mask_label_words": self.mask_label_words,
            },
            "decision_thresholds": self.thresholds,
        }
        (Path(save_directory) / "config.json").write_text(json.dumps(config, indent=2) + "\n")

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
        from transformers import AutoTokenizer

        from medllama_fusion.inference.export import build_exported_model, load_weights

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
                f"{config.get('format')!r}, expected {EXPORT_FORMAT!r})."
            )
        model = build_exported_model(config["fusion"])
        load_weights(model, folder / WEIGHTS_NAME)
        model.to(map_location)
        tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
        return cls(
            model,
            tokenizer,
            config["labels"],
            thresholds=config.get("decision_thresholds"),
            **config["preprocessing"],
        )
