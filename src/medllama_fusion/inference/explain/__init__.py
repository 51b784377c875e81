"""Explain predictions: token and image attributions with Captum, as PNG overlays and HTML.

``medllama-fusion explain --config quickstart --ckpt_path last --first 4`` (or
:func:`explain_samples`) explains chosen samples of a split: for each chosen label it computes
Integrated Gradients
(:func:`~medllama_fusion.inference.explain.attribution.integrated_gradients`) over the report's
token embeddings and the image's patch tokens, and writes per sample
``<id>.png`` (the image and one heatmap per label; an image id loses its extension) and
``<id>.html`` (highlighted tokens,
the overlay and all probabilities). Needs the ``explain`` extra
(``pip install "medllama-fusion[explain]"``: Captum and matplotlib).

For a model whose head uses label attention (``pooling="label_attention"``), each explained
label also gets that label's attention weights
(:func:`~medllama_fusion.inference.explain.attribution.label_attention`): over the report tokens
on the HTML page, beside its Integrated Gradients, and over the patches as a second row of
heatmaps in the PNG.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medllama_fusion.data.dataset import model_inputs
from medllama_fusion.data.images import ImageInput
from medllama_fusion.datasets.csv_reader import IMAGE_SUFFIXES
from medllama_fusion.errors import InputError
from medllama_fusion.extras import require
from medllama_fusion.inference.explain.attribution import (
    Attributions,
    LabelAttentionWeights,
    integrated_gradients,
    label_attention,
    patch_grid,
)
from medllama_fusion.inference.explain.render import heatmap, render_html, save_overlay
from medllama_fusion.inference.pipeline import FusionPipeline

__all__ = [
    "Attributions",
    "LabelAttentionWeights",
    "SampleExplanation",
    "explain_sample",
    "explain_samples",
    "integrated_gradients",
    "label_attention",
]


@dataclass
class SampleExplanation:
    """Explanation of one sample.

    Attributes:
        id: Sample id.
        probabilities: Label → probability (all labels).
        tokens: The report's tokens (as the tokenizer splits them).
        token_scores: Explained label → per-token scores.
        patch_scores: Explained label → per-patch scores (row-major patch grid).
        token_attention: Explained label → the label's attention weight per token (0 at
            padding, summing to 1 over the report); empty unless the model uses label attention.
        patch_attention: Explained label → the label's attention weight per patch (row-major
            patch grid, summing to 1); empty unless the model uses label attention.
        png: Overlay PNG written, if any.
        html: HTML page written, if any.
    """

    id: str
    probabilities: dict[str, float]
    tokens: list[str] = field(default_factory=list)
    token_scores: dict[str, list[float]] = field(default_factory=dict)
    patch_scores: dict[str, list[float]] = field(default_factory=dict)
    token_attention: dict[str, list[float]] = field(default_factory=dict)
    patch_attention: dict[str, list[float]] = field(default_factory=dict)
    png: Path | None = None
    html: Path | None = None


def _safe_name(sample_id: str) -> str:
    """A file stem for ``sample_id`` (an image file name loses its extension)."""
    path = Path(sample_id)
    stem = path.stem if path.suffix.lower() in IMAGE_SUFFIXES else sample_id
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "sample"


def _present(batch: dict[str, Any], key: str) -> bool:
    """Whether the batch's first sample has the modality (no flag: present)."""
    flags = batch.get(key)
    return flags is None or bool(flags[0])


def explain_sample(
    pipe: FusionPipeline,
    image: ImageInput | None = None,
    report: str | None = None,
    labels: Sequence[str] | None = None,
    sample_id: str = "sample",
    output_dir: str | Path | None = None,
    n_steps: int = 32,
) -> SampleExplanation:
    """Explain one image + report: attributions for ``labels`` and (optionally) files.

    With a label-attention head the explanation also carries each explained label's attention
    weights over the tokens and patches.

    Args:
        pipe: The pipeline (model and preprocessing).
        image: Image input (path, PIL, array, tensor) or ``None``.
        report: Report text or ``None``.
        labels: Labels to explain; default the most probable label.
        sample_id: Name used in titles and file names.
        output_dir: Write ``<id>.png`` and ``<id>.html`` here when given.
        n_steps: Integrated Gradients steps.

    Returns:
        The explanation.

    Raises:
        InputError: For an unknown label name, or without the ``explain`` extra.
    """
    require("explain", "explanations")
    batch = pipe.make_batch(image, report)
    probs = pipe(image=image, report=report)
    assert isinstance(probs, dict)
    if labels is None:
        labels = [max(probs, key=probs.__getitem__)]
    unknown = [name for name in labels if name not in pipe.label_names]
    if unknown:
        raise InputError(f"unknown label(s) {unknown}; choose from {pipe.label_names}.")
    mean, std = pipe.preprocessing.image_mean, pipe.preprocessing.image_std
    pad = pipe.preprocessing.pad_token_id
    result = SampleExplanation(sample_id, probs)
    if "input_ids" in batch:
        result.tokens = list(pipe.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()))
    inputs = model_inputs(batch)
    weights: LabelAttentionWeights | None = label_attention(pipe.model, **inputs)
    maps = {}
    attention_maps = {}
    for name in labels:
        attr = integrated_gradients(
            pipe.model,
            pipe.label_names.index(name),
            batch.get("input_ids"),
            batch.get("attention_mask"),
            batch.get("pixel_values"),
            pad_token_id=int(pad if pad is not None else 0),
            black_value=(0.0 - mean) / std,
            n_steps=n_steps,
        )
        if attr.tokens is not None:
            result.token_scores[name] = attr.tokens[0].cpu().tolist()
        if attr.patches is not None:
            result.patch_scores[name] = attr.patches[0].cpu().tolist()
            pixels = batch["pixel_values"][0, 0]
            maps[name] = heatmap(attr.patches[0], patch_grid(pipe.model), tuple(pixels.shape))
        if weights is None:
            continue
        index = pipe.label_names.index(name)
        if weights.tokens is not None and result.tokens and _present(batch, "text_present"):
            result.token_attention[name] = weights.tokens[0, index].cpu().tolist()
        if weights.patches is not None and _present(batch, "image_present"):
            result.patch_attention[name] = weights.patches[0, index].cpu().tolist()
            pixels = batch["pixel_values"][0, 0]
            attention_maps[name] = heatmap(
                weights.patches[0, index], patch_grid(pipe.model), tuple(pixels.shape)
            )
    if output_dir is not None:
        out = Path(output_dir)
        stem = _safe_name(sample_id)
        if maps:
            pixels = batch["pixel_values"][0, 0].float().cpu().numpy()
            result.png = save_overlay(
                pixels, maps, probs, out / f"{stem}.png", title=sample_id, attention=attention_maps
            )
        decisions = pipe.decide(probs) if pipe.thresholds else None
        result.html = render_html(
            sample_id,
            probs,
            {k: (result.tokens, v) for k, v in result.token_scores.items()},
            result.png,
            out / f"{stem}.html",
            decisions,
            {k: (result.tokens, v) for k, v in result.token_attention.items()},
        )
    return result


def explain_samples(
    pipe: FusionPipeline,
    datamodule: Any,
    split: str = "test",
    ids: Sequence[str] | None = None,
    first: int = 4,
    labels: Sequence[str] | None = None,
    output_dir: str | Path = "explanations",
    n_steps: int = 32,
) -> list[SampleExplanation]:
    """Explain chosen samples (``ids``, else the first ``first``) of a data module's split.

    Args:
        pipe: The pipeline.
        datamodule: The data module (set up here if needed).
        split: ``"train"``, ``"val"`` or ``"test"``.
        ids: Sample ids to explain.
        first: Number of samples from the start of the split when ``ids`` is not given.
        labels: Labels to explain; default each sample's most probable label.
        output_dir: Output folder.
        n_steps: Integrated Gradients steps.

    Returns:
        One explanation per sample.

    Raises:
        InputError: For an unknown split or id, or without the ``explain`` extra.
    """
    require("explain", "explanations")
    datamodule.setup("predict")
    if split not in datamodule.samples:
        raise InputError(
            f"split {split!r} does not exist; use one of {sorted(datamodule.samples)}."
        )
    samples = datamodule.samples[split]
    if ids:
        by_id = {sample.id: sample for sample in samples}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise InputError(
                f"id(s) {missing[:10]} are not in the {split} split of "
                f"{datamodule.source_description()}."
            )
        chosen = [by_id[i] for i in ids]
    else:
        chosen = list(samples[:first])
    results = []
    for sample in chosen:
        image = (
            sample.image_path if sample.image_path and Path(sample.image_path).is_file() else None
        )
        results.append(
            explain_sample(pipe, image, sample.text or None, labels, sample.id, output_dir, n_steps)
        )
    return results
