"""Where a fusion model's AUROC comes from: a modality and leakage audit on a split.

Every row scores the same samples of a split with the same trained model; only the input
changes::

    full           both modalities, as the model was trained
    no_image       the image removed: the model's missing-modality path (text alone)
    no_text        the report removed (image alone)
    mask_words     label names and synonyms removed from the reports
    mask_sentence  every sentence naming a label, a synonym or a cue word removed

Each row gives the macro AUROC and its paired difference against ``full`` with an interval and
a p-value (:func:`~medllama_fusion.metrics.compare`, clustered by report). OpenI's labels are
derived from the report text, so a model that keeps its AUROC without the image, and loses it
when label words are masked, reads the labels off the report.

The modality contribution of Gapp et al. (arXiv 2503.01904, "What are You Looking at? Modality
Contribution in Multimodal Medical Deep Learning") is measured by occlusion, as their code
defines it (github.com/ChristianGappGit/MC_MMD): for each sample, every image patch (the
model's patch size) is replaced by the image's mean value and every report token by the
rounded mean of the report's token ids, one at a time; the importance of a modality for a class
is the sum over its occluded units of the absolute change of that class's probability; per
sample and class the text share is ``I_text / (I_text + I_image)``; the shares are averaged over
samples per class, then over classes. A share near 1 (or 0) means the model collapsed onto one
modality.
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from medllama_fusion.data.dataset import FusionDataset, model_inputs
from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.data.text import MaskMode
from medllama_fusion.errors import InputError
from medllama_fusion.metrics import (
    DEFAULT_MIN_POSITIVES,
    Comparison,
    compare,
    format_interval,
    markdown_table,
)
from medllama_fusion.models import FusionModel

__all__ = [
    "AUDIT_CONDITIONS",
    "AuditCondition",
    "AuditReport",
    "ModalityContribution",
    "audit",
    "condition_scores",
    "modality_contribution",
]

AuditCondition = Literal["full", "no_image", "no_text", "mask_words", "mask_sentence"]
"""The inputs an audit scores (see the module docstring)."""
AUDIT_CONDITIONS: tuple[str, ...] = get_args(AuditCondition)
_DESCRIPTIONS: dict[str, str] = {
    "full": "both modalities, as trained",
    "no_image": "image removed (text alone)",
    "no_text": "report removed (image alone)",
    "mask_words": "label words masked in the reports",
    "mask_sentence": "sentences naming a label masked",
}
_CHUNK = 64


@dataclass
class ModalityContribution:
    """The occlusion-based modality contribution (see the module docstring).

    Attributes:
        text: Text share, averaged over classes (``image = 1 - text``).
        per_class_text: Text share per class (``NaN`` when no sample changed that class).
        samples: Samples measured (with both modalities).
    """

    text: float
    per_class_text: list[float]
    samples: int

    @property
    def image(self) -> float:
        """Image share, averaged over classes."""
        return 1.0 - self.text if not math.isnan(self.text) else math.nan


@dataclass
class AuditReport:
    """An audit's rows and the modality contribution.

    Attributes:
        label_names: Class names.
        rows: Condition → its comparison with ``full`` (``None`` for ``full`` itself).
        macro: Condition → macro AUROC over the classes every row averages (the fixed set of
            :func:`~medllama_fusion.metrics.compare`).
        contribution: The modality contribution, or ``None`` when not measured.
        notes: Conditions left out and why.
    """

    label_names: list[str]
    rows: dict[str, Comparison | None]
    macro: dict[str, float]
    contribution: ModalityContribution | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The rows as a Markdown table (macro AUROC and the paired difference to ``full``)."""
        header = ["input", "macro AUROC", "difference to full", "interval", "p"]
        body: list[list[str]] = []
        for name, comparison in self.rows.items():
            macro = f"{self.macro[name]:.4f}"
            if comparison is None:
                body.append([_DESCRIPTIONS[name], macro, "", "", ""])
                continue
            low, high = comparison.mean_ci
            interval = format_interval(low, high, signed=True)
            body.append(
                [
                    _DESCRIPTIONS[name],
                    macro,
                    f"{comparison.mean_difference:+.4f}",
                    interval,
                    f"{comparison.mean_p_value:.3g}",
                ]
            )
        return markdown_table(header, body)

    def csv_rows(self) -> list[dict[str, str | float]]:
        """One row per condition: macro AUROC, difference to ``full``, interval and p-value."""
        rows: list[dict[str, str | float]] = []
        for name, comparison in self.rows.items():
            row: dict[str, str | float] = {
                "condition": name,
                "description": _DESCRIPTIONS[name],
                "macro_auroc": self.macro[name],
                "difference": 0.0 if comparison is None else comparison.mean_difference,
                "ci_low": math.nan if comparison is None else comparison.mean_ci[0],
                "ci_high": math.nan if comparison is None else comparison.mean_ci[1],
                "p_value": math.nan if comparison is None else comparison.mean_p_value,
            }
            rows.append(row)
        if self.contribution is not None:
            rows.append(
                {
                    "condition": "modality_contribution_text",
                    "description": "text share of the occlusion importance (arXiv 2503.01904)",
                    "macro_auroc": math.nan,
                    "difference": self.contribution.text,
                    "ci_low": math.nan,
                    "ci_high": math.nan,
                    "p_value": math.nan,
                }
            )
        return rows

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``audit.md`` (summary, then per-class tables) and ``audit.csv`` (one row each).

        Args:
            folder: Output folder (created).

        Returns:
            The two files.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        parts = ["# Modality and leakage audit", "", self.summary()]
        if self.contribution is not None:
            parts += ["", "## Modality contribution per class", ""]
            parts.append(
                markdown_table(
                    ["class", "text share", "image share"],
                    [
                        [name, f"{share:.3f}", f"{1 - share:.3f}"]
                        if not math.isnan(share)
                        else [name, "n/a", "n/a"]
                        for name, share in zip(
                            self.label_names, self.contribution.per_class_text, strict=True
                        )
                    ],
                )
            )
        for name, comparison in self.rows.items():
            if comparison is not None:
                parts += ["", f"## {_DESCRIPTIONS[name]} - full, per class", "", comparison.table()]
        markdown = out / "audit.md"
        markdown.write_text("\n".join(parts) + "\n", encoding="utf-8")
        table = out / "audit.csv"
        rows = self.csv_rows()
        with table.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return [markdown, table]

    def summary(self) -> str:
        """The table, the modality contribution and the notes, as printed."""
        lines = [self.table()]
        if self.contribution is not None:
            share = self.contribution
            lines.append(
                f"\nModality contribution (occlusion, arXiv 2503.01904; {share.samples} samples): "
                f"text {share.text:.2f}, image {share.image:.2f}"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _loader(
    dataset: FusionDataset, preprocessing: Preprocessing, batch_size: int
) -> DataLoader[Any]:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=preprocessing.collator()
    )


def _masked(dataset: FusionDataset, preprocessing: Preprocessing, mode: MaskMode) -> FusionDataset:
    """A copy of ``dataset`` whose reports are masked as ``mode`` says."""
    record = replace(preprocessing, mask_label_words=True, mask_mode=mode).complete(
        label_names=preprocessing.label_names, pad_token_id=preprocessing.pad_token_id
    )
    masked = copy.copy(dataset)
    masked.input_ids = record.encode([sample.text for sample in dataset.samples])
    return masked


def _drop(batch: dict[str, Any], condition: str) -> dict[str, Any]:
    """The batch without the modality a condition removes."""
    if condition == "no_image":
        return {k: v for k, v in batch.items() if k not in ("pixel_values", "image_present")}
    if condition == "no_text":
        drop = ("input_ids", "attention_mask", "text_present")
        return {k: v for k, v in batch.items() if k not in drop}
    return batch


@torch.inference_mode()
def condition_scores(
    model: FusionModel,
    dataset: FusionDataset,
    preprocessing: Preprocessing,
    condition: AuditCondition,
    batch_size: int = 16,
) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities of ``model`` on ``dataset`` with the input a condition gives.

    Args:
        model: The trained fusion model.
        dataset: The split (labelled).
        preprocessing: The model's preprocessing record.
        condition: One of :data:`AUDIT_CONDITIONS`.
        batch_size: Batch size.

    Returns:
        ``(probabilities [N, C], labels [N, C], report groups [N])`` in the dataset's order.
    """
    model.eval()
    if condition in ("mask_words", "mask_sentence"):
        mode: MaskMode = "words" if condition == "mask_words" else "sentence"
        dataset = _masked(dataset, preprocessing, mode)
    device = next(model.parameters()).device
    probs, labels, groups = [], [], []
    for batch in _loader(dataset, preprocessing, batch_size):
        inputs = model_inputs(_drop(batch, condition))
        inputs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
        probs.append(torch.sigmoid(model(**inputs).logits.float()).cpu())
        labels.append(batch["labels"])
        groups.append(batch["group_index"])
    return torch.cat(probs), torch.cat(labels), torch.cat(groups)


def _occlusions(
    ids: Tensor, pixels: Tensor, patch: int
) -> Iterator[tuple[Literal["text", "image"], Tensor, Tensor]]:
    """Yield ``(modality, input_ids, pixel_values)`` with one unit occluded, in chunks."""
    valid = ids.numel()
    if valid:
        token = int(ids.float().mean().round())
        occluded = ids.repeat(valid, 1)
        occluded[torch.arange(valid), torch.arange(valid)] = token
        for start in range(0, valid, _CHUNK):
            rows = occluded[start : start + _CHUNK]
            yield "text", rows, pixels.expand(len(rows), -1, -1, -1)
    side = pixels.shape[-1] // patch
    mean = float(pixels.mean())
    cells = [(r, c) for r in range(side) for c in range(side)]
    for start in range(0, len(cells), _CHUNK):
        chunk = cells[start : start + _CHUNK]
        images = pixels.repeat(len(chunk), 1, 1, 1)
        for row, (r, c) in enumerate(chunk):
            images[row, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = mean
        yield "image", ids.expand(len(chunk), -1), images


@torch.inference_mode()
def modality_contribution(
    model: FusionModel,
    dataset: FusionDataset,
    max_samples: int | None = None,
) -> ModalityContribution:
    """The occlusion-based modality contribution of Gapp et al. (see the module docstring).

    Args:
        model: The trained fusion model (text and image).
        dataset: The split; samples without both modalities are skipped.
        max_samples: Measure at most this many samples (the first ones); ``None`` = all.

    Returns:
        The text share per class and averaged over classes.

    Raises:
        InputError: When the dataset does not serve both modalities.
    """
    if set(dataset.modalities) != {"text", "image"}:
        raise InputError(
            "the modality contribution needs a model and data with both modalities; this run "
            f"serves {list(dataset.modalities)}."
        )
    model.eval()
    device = next(model.parameters()).device
    side = round(model.vision.num_patches**0.5)
    patch = model.vision.vision_config.image_size // side
    shares: list[Tensor] = []
    for index in range(len(dataset)):
        if max_samples is not None and len(shares) >= max_samples:
            break
        item = dataset[index]
        if not (item["text_present"] and item["image_present"]):
            continue
        ids = item["input_ids"].to(device)
        pixels = item["pixel_values"][None].to(device, model.backbone.dtype)
        base = torch.sigmoid(model(input_ids=ids[None], pixel_values=pixels).logits.float())[0]
        importance = {"text": torch.zeros_like(base), "image": torch.zeros_like(base)}
        for modality, rows, images in _occlusions(ids, pixels, patch):
            probs = torch.sigmoid(model(input_ids=rows, pixel_values=images).logits.float())
            importance[modality] += (probs - base).abs().sum(0)
        total = importance["text"] + importance["image"]
        shares.append(
            torch.where(total > 0, importance["text"] / total, torch.full_like(total, math.nan))
        )
    if not shares:
        return ModalityContribution(math.nan, [], 0)
    per_class = torch.stack(shares).cpu().nanmean(0)
    defined = per_class[~per_class.isnan()]
    text = float(defined.mean()) if defined.numel() else math.nan
    return ModalityContribution(text, per_class.tolist(), len(shares))


def audit(
    model: FusionModel,
    dataset: FusionDataset,
    preprocessing: Preprocessing,
    conditions: Sequence[AuditCondition] = tuple(AUDIT_CONDITIONS),  # type: ignore[arg-type]
    contribution_samples: int | None = 100,
    batch_size: int = 16,
    confidence: float = 0.95,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> AuditReport:
    """Score a split under each condition and compare with the full model (module docstring).

    Args:
        model: The trained fusion model.
        dataset: The labelled split to audit.
        preprocessing: The model's preprocessing record.
        conditions: Conditions to score (``full`` is always scored, first).
        contribution_samples: Samples for the modality contribution (``0`` skips it; ``None``
            measures all).
        batch_size: Batch size.
        confidence: Confidence level of the paired intervals.
        min_positives: Fewest positive and negative reports of a class in the macro mean
            (as in ``test``'s table).

    Returns:
        The report.

    Raises:
        InputError: When the split has no labels.
    """
    if not dataset.samples or any(s.labels is None for s in dataset.samples):
        raise InputError("the audit needs a labelled split; this one has unlabelled samples.")
    served = set(preprocessing.modalities)
    wanted: list[str] = ["full", *(c for c in conditions if c != "full")]
    notes: list[str] = []
    if served != {"text", "image"}:
        skipped = [c for c in wanted if c in ("no_image", "no_text")]
        wanted = [c for c in wanted if c not in skipped]
        if skipped:
            notes.append(f"{', '.join(skipped)} left out: the model serves {sorted(served)} only")
    if "text" not in served:
        skipped = [c for c in wanted if c.startswith("mask_")]
        wanted = [c for c in wanted if c not in skipped]
        if skipped:
            notes.append(f"{', '.join(skipped)} left out: the model reads no report")
    full, target, groups = condition_scores(model, dataset, preprocessing, "full", batch_size)
    names = list(preprocessing.label_names)
    rows: dict[str, Comparison | None] = {"full": None}
    reference = compare(full, full, target, groups, names, confidence, min_positives)
    macro = {"full": reference.mean_a}
    if math.isnan(reference.mean_a):
        notes.append(
            f"no class has {min_positives} positive and {min_positives} negative reports in "
            "this split, so there is no macro AUROC: audit a larger split or lower "
            "min_positives"
        )
    for condition in wanted[1:]:
        scores, _, _ = condition_scores(model, dataset, preprocessing, condition, batch_size)  # type: ignore[arg-type]
        result = compare(
            scores, full, target, groups, names, confidence, min_positives, (condition, "full")
        )
        rows[condition] = result
        macro[condition] = result.mean_a
    contribution = None
    if served == {"text", "image"} and contribution_samples != 0:
        contribution = modality_contribution(model, dataset, contribution_samples)
    return AuditReport(list(preprocessing.label_names), rows, macro, contribution, notes)
