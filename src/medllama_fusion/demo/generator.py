"""Synthetic, learnable demo data in the raw NLM layout, the MONAI CSV layout, plus a tokenizer.

:func:`make_demo_dataset` writes, deterministically for a seed (same bytes):

- raw NLM layout: ``ecgen-radiology/<n>.xml`` (the structure of the real release: ``eCitation``
  with ``uId``, ``AbstractText`` sections COMPARISON/INDICATION/FINDINGS/IMPRESSION, ``MeSH``
  ``major`` terms and one ``parentImage`` per image), ``NLMCXR_png/<image id>.png`` and
  ``nlmcxr_dicom_metadata.csv`` (columns ``imageid``, ``View Position``, ``filename`` like
  torchxrayvision's table) so frontal-view selection works on the demo. Every report has a
  frontal image (PA, sometimes AP); about half also have a lateral (``LL``) image.
- MONAI CSV layout as the TransCheX tutorial's ``preprocess_openi.py`` publishes it:
  ``train.csv``/``validation.csv``/``test.csv`` with ``id, report`` and the 14 label columns
  (``Pleural_Other`` spelled with an underscore), ``id`` being the image file name with its
  extension (``CXR1_1_IM-0001-3001.png``), and the frontal image at ``images/<id>``. Split sizes
  follow the paper's proportions (~85/3/12 %, the paper has 3199/101/377) except that
  validation gets at least ``min(60, 15 %)`` reports so its AUROC is meaningful; with 600
  reports that is 468/60/72. Validation and test are filled first with reports of their rarest
  classes, so each split holds at least :data:`DEMO_MIN_SPLIT_POSITIVES` positives of every
  class when the data has enough (it does at the default size), then at random.
- ``tokenizer/``: a word-level ``tokenizers`` tokenizer over the demo vocabulary wrapped in
  ``PreTrainedTokenizerFast`` (``[PAD]`` = id 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``;
  lower-cased; vocab < 512) saved with ``save_pretrained``.

Labels are drawn per report; the MeSH ``major`` terms are chosen so that
:func:`~medllama_fusion.datasets.labels.labels_from_mesh` returns exactly those labels (checked
while generating). Images are 8-bit grayscale chest-like pictures (body, lungs, spine, heart,
diaphragm) with drawn findings: enlarged heart (Cardiomegaly), wide upper mediastinum,
fluid level at a base (Pleural-Effusion), hazy blobs (Lung-Opacity, Consolidation, Pneumonia),
a small round nodule (Lung-Lesion), a basal band (Atelectasis), perihilar haze (Edema), a dark
apex without markings (Pneumothorax), a broken rib (Fracture), a pleural stripe (Pleural-Other)
and a tube line (Support-Devices). Reports are templated sentences with negations ("No pleural
effusion." vs "Small left pleural effusion."). Each positive finding is drawn with probability
``image_recall`` and mentioned with probability ``text_recall``, independently, and a few
spurious hedged mentions/artefacts are added, so neither modality alone is perfect and fusion
helps.

:func:`write_demo_root` writes both layouts into a missing or empty folder in one step (what
``OpenIDataModule(demo=True)`` does). From the command line:
``python -m medllama_fusion.demo --root DIR [--n-reports N]``
(:mod:`medllama_fusion.demo`).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image

from medllama_fusion.datasets.csv_reader import MONAI_SPLIT_FILES
from medllama_fusion.datasets.labels import MONAI_COLUMN_NAMES, OPENI_LABELS, labels_from_mesh
from medllama_fusion.datasets.nlm_reports import IMAGES_FOLDER, REPORTS_FOLDER
from medllama_fusion.datasets.reports import format_report

DEMO_METADATA_FILE = "nlmcxr_dicom_metadata.csv"
"""View-position table written into the demo root (same columns as torchxrayvision's)."""

DEMO_TOKENIZER_DIR = "tokenizer"
DEMO_REPORTS = 600
"""Default number of demo reports (468/60/72 train/validation/test)."""
DEMO_MIN_SPLIT_POSITIVES = 5
"""Positives of every class the demo's validation and test CSVs get (when the data has them):
the data modules' ``min_split_positives`` default, so the demo gives no rare-class warning."""
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.15,
    "Cardiomegaly": 0.25,
    "Consolidation": 0.10,
    "Edema": 0.10,
    "Enlarged-Cardiomediastinum": 0.10,
    "Fracture": 0.12,
    "Lung-Lesion": 0.15,
    "Lung-Opacity": 0.22,
    "Pleural-Effusion": 0.20,
    "Pleural-Other": 0.12,
    "Pneumonia": 0.10,
    "Pneumothorax": 0.10,
    "Support-Devices": 0.15,
}
"""Per-label probability of a demo report being positive (No-Finding is derived)."""

SIDES = ("left", "right")

# label -> (MeSH term template, positive sentence templates, negative sentence or "")
_FINDINGS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "Atelectasis": (
        "Pulmonary Atelectasis/base/{side}",
        (
            "Streaky {side} basilar opacity compatible with atelectasis.",
            "Mild {side} basilar atelectasis.",
        ),
        "",
    ),
    "Cardiomegaly": (
        "Cardiomegaly/{grade}",
        ("The heart is enlarged.", "{grade_cap} cardiomegaly.", "Cardiac silhouette is enlarged."),
        "Heart size is normal.",
    ),
    "Consolidation": (
        "Consolidation/lung/lower lobe/{side}",
        ("Dense consolidation in the {side} lower lobe.", "Focal {side} lower lobe consolidation."),
        "No focal consolidation.",
    ),
    "Edema": (
        "Pulmonary Edema/{grade}",
        ("Perihilar haziness consistent with pulmonary edema.", "{grade_cap} interstitial edema."),
        "No pulmonary edema.",
    ),
    "Enlarged-Cardiomediastinum": (
        "Mediastinum/widened",
        ("The mediastinum is widened.", "Widened superior mediastinal contour."),
        "Mediastinal contours are normal.",
    ),
    "Fracture": (
        "Fractures, Bone/ribs/{side}",
        ("Displaced {side} rib fracture.", "Healing fracture of a {side} rib."),
        "No acute bony abnormality.",
    ),
    "Lung-Lesion": (
        "Nodule/lung/upper lobe/{side}",
        (
            "Small nodule in the {side} upper lobe.",
            "A {side} upper lobe pulmonary nodule is noted.",
        ),
        "",
    ),
    "Lung-Opacity": (
        "Opacity/lung/base/{side}/{grade}",
        ("Patchy {side} basilar airspace opacity.", "{grade_cap} opacity at the {side} lung base."),
        "",
    ),
    "Pleural-Effusion": (
        "Pleural Effusion/{side}/{size}",
        ("{size_cap} {side} pleural effusion.", "There is a {size} {side} pleural effusion."),
        "No pleural effusion.",
    ),
    "Pleural-Other": (
        "Thickening/pleura/{side}",
        ("Pleural thickening along the {side} chest wall.", "Chronic {side} pleural thickening."),
        "",
    ),
    "Pneumonia": (
        "Pneumonia/lower lobe/{side}",
        (
            "Findings are concerning for {side} lower lobe pneumonia.",
            "Airspace disease suspicious for pneumonia on the {side}.",
        ),
        "",
    ),
    "Pneumothorax": (
        "Pneumothorax/{side}/{size}",
        ("{size_cap} {side} apical pneumothorax.", "There is a {size} {side} pneumothorax."),
        "No pneumothorax.",
    ),
    "Support-Devices": (
        "Catheters, Indwelling",
        ("Central venous catheter tip in the superior vena cava.", "Support tube is in place."),
        "",
    ),
}

_NEGATIVE_ONLY_SENTENCES = (
    "Lungs are clear.",
    "The lungs are clear bilaterally.",
    "No acute osseous abnormality.",
)
_SPURIOUS = ("Possible small nodule versus overlapping shadow.", "Questionable trace effusion.")


@dataclass(frozen=True)
class DemoReport:
    """One generated demo report (before writing).

    Attributes:
        number: Report number (file ``<number>.xml``, uid ``CXR<number>``).
        labels: Label name → 0/1 for the 14 labels.
        mesh: MeSH ``major`` terms.
        findings: FINDINGS text.
        impression: IMPRESSION text.
        image_ids: Image ids, frontal first.
        views: View position per image id.
    """

    number: int
    labels: dict[str, int]
    mesh: tuple[str, ...]
    findings: str
    impression: str
    image_ids: tuple[str, ...]
    views: tuple[str, ...]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return normalised ``(y, x)`` coordinate grids in ``[0, 1]``."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="ij")


def _ellipse(
    y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float, soft: float = 0.08
) -> np.ndarray:
    """Return a soft-edged filled ellipse mask in ``[0, 1]``."""
    distance = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    return np.clip((1.0 - distance) / soft, 0.0, 1.0)


def _segment(
    y: np.ndarray, x: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float
) -> np.ndarray:
    """Return a soft mask of the segment from ``p0`` to ``p1`` (``(y, x)`` points)."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    distance = np.hypot(y - (y0 + t * dy), x - (x0 + t * dx))
    return np.clip(1.0 - distance / width, 0.0, 1.0)


def _lung_x(side: str) -> float:
    """Image x-centre of a lung; the patient's right lung is on the image left (PA view)."""
    return 0.32 if side == "right" else 0.68


def draw_frontal(
    labels: dict[str, int], sides: dict[str, str], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw a frontal chest-like radiograph with the given findings.

    Args:
        labels: Label name → 1 for findings to draw (already filtered by image recall).
        sides: Label name → ``"left"``/``"right"`` (patient side) for lateralised findings.
        size: Image side length in pixels.
        rng: Random generator (anatomy jitter, noise).

    Returns:
        ``uint8`` array ``[size, size]``.
    """
    y, x = _grid(size)
    jitter = rng.normal(0.0, 0.015, size=4)
    image = np.full((size, size), 0.08, dtype=np.float32)
    image += 0.42 * _ellipse(y, x, 0.55 + jitter[0], 0.5, 0.5, 0.44)  # body
    lungs = np.maximum(
        _ellipse(y, x, 0.47 + jitter[1], 0.32, 0.3, 0.14),
        _ellipse(y, x, 0.47 + jitter[1], 0.68, 0.3, 0.14),
    )
    image -= 0.3 * lungs
    for rib in range(6):  # faint ribs
        ry = 0.24 + 0.08 * rib
        arc = np.abs(y - ry - 0.24 * (x - 0.5) ** 2)
        image += 0.05 * lungs * np.clip(1 - arc / 0.012, 0, 1)
    image += 0.25 * _ellipse(y, x, 0.5, 0.5, 0.45, 0.04)  # spine / mediastinum
    heart_rx = 0.2 if labels.get("Cardiomegaly") else 0.13
    image += 0.3 * _ellipse(y, x, 0.64 + jitter[2], 0.55, 0.14, heart_rx)
    mediastinum_rx = 0.11 if labels.get("Enlarged-Cardiomediastinum") else 0.06
    image += 0.2 * _ellipse(y, x, 0.3, 0.5, 0.14, mediastinum_rx)
    image += 0.25 * np.clip((y - 0.8 - 0.05 * np.cos(6 * x) + jitter[3]) / 0.03, 0, 1)  # diaphragm

    def lung(label: str) -> float:
        return _lung_x(sides.get(label, "right"))

    if labels.get("Pleural-Effusion"):
        cx = lung("Pleural-Effusion")
        level = rng.uniform(0.6, 0.7)
        fluid = np.clip((y - level) / 0.02, 0, 1) * _ellipse(y, x, 0.55, cx, 0.3, 0.16)
        image += 0.3 * fluid
    if labels.get("Lung-Opacity"):
        image += 0.16 * _ellipse(y, x, 0.6, lung("Lung-Opacity"), 0.1, 0.08, soft=0.8)
    if labels.get("Consolidation"):
        image += 0.26 * _ellipse(y, x, 0.62, lung("Consolidation"), 0.08, 0.08, soft=0.3)
    if labels.get("Pneumonia"):
        cx = lung("Pneumonia")
        for _ in range(3):
            cy_, cx_ = 0.6 + rng.uniform(-0.06, 0.06), cx + rng.uniform(-0.05, 0.05)
            image += 0.14 * _ellipse(y, x, cy_, cx_, 0.05, 0.05, soft=0.6)
    if labels.get("Lung-Lesion"):
        image += 0.35 * _ellipse(y, x, rng.uniform(0.3, 0.38), lung("Lung-Lesion"), 0.035, 0.035)
    if labels.get("Atelectasis"):
        cx = lung("Atelectasis")
        image += 0.22 * _segment(y, x, (0.7, cx - 0.1), (0.66, cx + 0.1), 0.02)
    if labels.get("Edema"):
        image += 0.15 * (
            _ellipse(y, x, 0.45, 0.36, 0.16, 0.1, 0.9) + _ellipse(y, x, 0.45, 0.64, 0.16, 0.1, 0.9)
        )
    if labels.get("Pneumothorax"):
        cx = lung("Pneumothorax")
        region = _ellipse(y, x, 0.25, cx, 0.1, 0.12, soft=0.2) * lungs
        image = image * (1 - 0.6 * region)
        image += 0.2 * _segment(y, x, (0.18, cx - 0.08), (0.34, cx + 0.04), 0.008)
    if labels.get("Fracture"):
        cx = lung("Fracture")
        image += 0.35 * _segment(y, x, (0.44, cx - 0.1), (0.47, cx - 0.02), 0.015)
        image += 0.35 * _segment(y, x, (0.5, cx + 0.0), (0.53, cx + 0.1), 0.015)
    if labels.get("Pleural-Other"):
        cx = lung("Pleural-Other")
        edge = cx - 0.13 if cx < 0.5 else cx + 0.13
        image += 0.25 * _segment(y, x, (0.3, edge), (0.65, edge), 0.018)
    if labels.get("Support-Devices"):
        image += 0.5 * _segment(y, x, (0.02, 0.44), (0.42, 0.47), 0.01)
        image += 0.5 * _ellipse(y, x, 0.42, 0.47, 0.015, 0.015)
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05)
    image = image * gain + offset + rng.normal(0.0, 0.03, size=image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def draw_lateral(size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a lateral-view-like image (body profile with heart and spine; no findings).

    Args:
        size: Image side length.
        rng: Random generator.

    Returns:
        ``uint8`` array ``[size, size]``.
    """
    y, x = _grid(size)
    image = np.full((size, size), 0.08, dtype=np.float32)
    image += 0.4 * _ellipse(y, x, 0.55, 0.5, 0.48, 0.3)
    image -= 0.2 * _ellipse(y, x, 0.45, 0.48, 0.3, 0.2)
    image += 0.3 * _ellipse(y, x, 0.5, 0.78, 0.4, 0.04)
    image += 0.2 * _ellipse(y, x, 0.62, 0.4, 0.14, 0.12)
    image += rng.normal(0.0, 0.03, size=image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _fill(template: str, side: str, grade: str, size: str) -> str:
    """Fill a template's ``{side}``, ``{grade}``, ``{size}`` (and ``_cap`` variants)."""
    return template.format(
        side=side,
        grade=grade,
        size=size,
        grade_cap=grade.capitalize(),
        size_cap=size.capitalize(),
    )


def generate_report(
    number: int,
    rng: random.Random,
    image_recall: float = 0.85,
    text_recall: float = 0.85,
) -> tuple[DemoReport, dict[str, int], dict[str, str]]:
    """Draw labels, MeSH terms and report text for one demo report.

    Args:
        number: Report number.
        rng: Python random generator (consumed in a fixed order).
        image_recall: Probability that a positive finding is drawn in the image.
        text_recall: Probability that a positive finding is mentioned in the report.

    Returns:
        ``(report, drawn, sides)``: the report, the labels to draw in the frontal image and the
        patient side per lateralised label.

    Raises:
        RuntimeError: If the MeSH terms do not map back to the drawn labels (a table mismatch).
    """
    positives = [label for label, p in PREVALENCE.items() if rng.random() < p]
    sides = {label: rng.choice(SIDES) for label in PREVALENCE}
    mesh: list[str] = []
    sentences: list[str] = []
    impression: list[str] = []
    for label in PREVALENCE:
        term, positive_templates, negative = _FINDINGS[label]
        side, grade = sides[label], rng.choice(("mild", "moderate"))
        size = rng.choice(("small", "moderate", "large"))
        if label in positives:
            mesh.append(_fill(term, side, grade, size))
            if rng.random() < text_recall:
                sentence = _fill(rng.choice(positive_templates), side, grade, size)
                sentences.append(sentence)
                if rng.random() < 0.6:
                    impression.append(sentence)
        elif negative and rng.random() < 0.5:
            sentences.append(negative)
    if not positives:
        mesh.append("normal")
        sentences.append(rng.choice(_NEGATIVE_ONLY_SENTENCES))
    if rng.random() < 0.04:
        sentences.append(rng.choice(_SPURIOUS))
    rng.shuffle(sentences)
    if not impression:
        impression.append(
            "No acute cardiopulmonary abnormality." if not positives else "Findings as above."
        )
    labels = dict(zip(OPENI_LABELS, labels_from_mesh(mesh, OPENI_LABELS), strict=True))
    expected = set(positives) or {"No-Finding"}
    if {name for name, value in labels.items() if value} != expected:
        raise RuntimeError(
            f"demo MeSH terms {mesh} map to {labels}, not {sorted(expected)}; update the demo "
            "term templates to match medllama_fusion.datasets.labels.MESH_RULES."
        )
    drawn = {label: 1 for label in positives if rng.random() < image_recall}
    if rng.random() < 0.03:  # a spurious artefact
        drawn[rng.choice(("Lung-Lesion", "Lung-Opacity"))] = 1
    frontal_view = "AP" if rng.random() < 0.15 else "PA"
    image_ids = [f"CXR{number}_IM-{number:04d}-1001"]
    views = [frontal_view]
    if rng.random() < 0.5:
        lateral = f"CXR{number}_IM-{number:04d}-2001"
        if rng.random() < 0.3:  # lateral listed first, so "first image" would be wrong
            image_ids.insert(0, lateral)
            views.insert(0, "LL")
        else:
            image_ids.append(lateral)
            views.append("LL")
    report = DemoReport(
        number=number,
        labels=labels,
        mesh=tuple(mesh),
        findings=" ".join(sentences),
        impression=" ".join(impression),
        image_ids=tuple(image_ids),
        views=tuple(views),
    )
    return report, drawn, sides


def report_xml(report: DemoReport) -> str:
    """Render a demo report as an NLM OpenI ``eCitation`` XML document.

    Args:
        report: The report.

    Returns:
        The XML text (same element structure as the files of ``NLMCXR_reports.tgz``).
    """
    mesh = "\n".join(f"      <major>{escape(term)}</major>" for term in report.mesh)
    images = "\n".join(
        f"""   <parentImage id={quoteattr(image_id)}>
      <figureId>F{index + 1}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{escape(image_id)}.jpg</url>
         <imgModality>7</imgModality>
         <region type="panel">
            <globalImageFeatures>
               <CEDD>f2p0k1</CEDD>
            </globalImageFeatures>
         </region>
      </panel>
   </parentImage>"""
        for index, image_id in enumerate(report.image_ids)
    )
    number = report.number
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{number}"/>
   <pmcId id="{number}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{number}"/>
   <licenseType>open-access</licenseType>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>medllama-fusion demo (synthetic)</publisher>
   <title>Synthetic chest X-ray collection</title>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="medllama-fusion" Status="synthetic">
      <Article PubModel="Electronic">
         <ArticleTitle>Synthetic chest X-ray collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Synthetic demo case.</AbstractText>
            <AbstractText Label="FINDINGS">{escape(report.findings)}</AbstractText>
            <AbstractText Label="IMPRESSION">{escape(report.impression)}</AbstractText>
         </Abstract>
         <Language>eng</Language>
         <PublicationTypeList>
            <PublicationType>Radiology Report</PublicationType>
         </PublicationTypeList>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""


def demo_split_sizes(n_reports: int) -> tuple[int, int, int]:
    """Return (train, validation, test) report counts for the demo CSV layout.

    Test gets 12 % (paper: 377/3677 ≈ 10 %), validation ``max(3 %, min(60, 15 %))`` so that its
    AUROC is meaningful, train the rest (at least one report).

    Args:
        n_reports: Total number of reports (>= 3).

    Returns:
        The three counts, summing to ``n_reports``.
    """
    n_test = max(1, round(0.12 * n_reports))
    n_val = max(1, round(0.03 * n_reports), min(60, round(0.15 * n_reports)))
    n_train = n_reports - n_val - n_test
    return n_train, n_val, n_test


def demo_splits(
    labels: Sequence[Sequence[int]], n_val: int, n_test: int, seed: int
) -> dict[str, list[int]]:
    """Assign reports to the demo's train/validation/test CSVs (see the module docstring).

    Validation, then test, first takes reports positive for its classes with fewer than
    :data:`DEMO_MIN_SPLIT_POSITIVES` positives (rarest class first, in a seeded random order;
    together at most half of a class's positives, so train keeps the other half), then random
    reports up to its size; train gets the rest.

    Args:
        labels: 0/1 labels per report.
        n_val: Validation size.
        n_test: Test size.
        seed: Seed of the random order.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, sorted report indices.
    """
    order = list(range(len(labels)))
    random.Random(seed).shuffle(order)
    num_classes = len(labels[0]) if labels else 0
    totals = [sum(row[c] for row in labels) for c in range(num_classes)]
    rarest_first = sorted(range(num_classes), key=lambda c: (totals[c], c))
    taken: set[int] = set()
    parts: dict[str, list[int]] = {}
    for split, size in (("val", n_val), ("test", n_test)):
        chosen: list[int] = []
        for c in rarest_first:
            have = sum(labels[i][c] for i in chosen)
            held_out = sum(labels[i][c] for i in taken)  # by validation and test so far
            for i in order:
                if have >= DEMO_MIN_SPLIT_POSITIVES or len(chosen) >= size:
                    break
                if held_out >= totals[c] // 2:
                    break
                if i not in taken and labels[i][c]:
                    chosen.append(i)
                    taken.add(i)
                    have += 1
                    held_out += 1
        for i in order:
            if len(chosen) >= size:
                break
            if i not in taken:
                chosen.append(i)
                taken.add(i)
        parts[split] = sorted(chosen)
    return {"train": sorted(set(order) - taken), **parts}


def build_demo_tokenizer(texts: Sequence[str], max_vocab: int = 512) -> object:
    """Build a word-level ``PreTrainedTokenizerFast`` over the words of ``texts``.

    Lower-cases, splits on whitespace and punctuation, ``[PAD]`` is id 0; words are ordered by
    descending frequency then alphabetically (deterministic) and cut at ``max_vocab``.

    Args:
        texts: Corpus.
        max_vocab: Maximum vocabulary size including special tokens.

    Returns:
        The ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text.lower()):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max_vocab - len(SPECIAL_TOKENS)]
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    model = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    model.normalizer = normalizers.Lowercase()
    model.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def _write_png(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit grayscale PNG (deterministic bytes)."""
    Image.fromarray(array, mode="L").save(path, format="PNG", optimize=False)


def make_demo_dataset(
    root: str | Path,
    n_reports: int = DEMO_REPORTS,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "both",
    image_recall: float = 0.85,
    text_recall: float = 0.85,
) -> Path:
    """Write the synthetic demo dataset (see the module docstring) under ``root``.

    Args:
        root: Output folder (created; existing demo files are overwritten).
        n_reports: Number of reports (>= 3).
        image_size: Image side length in pixels.
        seed: Random seed; the same seed writes the same bytes.
        layout: ``"raw"``, ``"csv"`` or ``"both"``.
        image_recall: Probability that a positive finding is visible in the image.
        text_recall: Probability that a positive finding is mentioned in the report.

    Returns:
        ``root`` as a ``Path``.

    Raises:
        ValueError: For ``n_reports < 3``, ``image_size < 16`` or an unknown ``layout``.
    """
    if n_reports < 3:
        raise ValueError(f"n_reports must be >= 3 (one per split); got {n_reports}.")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels; got {image_size}.")
    if layout not in ("raw", "csv", "both"):
        raise ValueError(f"layout must be 'raw', 'csv' or 'both'; got {layout!r}.")
    root = Path(root)
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    reports: list[DemoReport] = []
    frontal_pixels: dict[int, np.ndarray] = {}
    raw_dir, png_dir, csv_images = root / REPORTS_FOLDER, root / IMAGES_FOLDER, root / "images"
    for folder, wanted in ((raw_dir, "raw"), (png_dir, "raw"), (csv_images, "csv")):
        if layout in (wanted, "both"):
            folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, n_reports + 1):
        report, drawn, sides = generate_report(number, rng, image_recall, text_recall)
        reports.append(report)
        frontal_pixels[number] = draw_frontal(drawn, sides, image_size, np_rng)
        lateral = draw_lateral(image_size, np_rng) if len(report.image_ids) > 1 else None
        if layout in ("raw", "both"):
            (raw_dir / f"{number}.xml").write_text(report_xml(report), encoding="utf-8")
            for image_id, view in zip(report.image_ids, report.views, strict=True):
                pixels = frontal_pixels[number] if view != "LL" else lateral
                assert pixels is not None
                _write_png(pixels, png_dir / f"{image_id}.png")
    texts = [format_report(report.findings, report.impression) for report in reports]
    if layout in ("raw", "both"):
        with (root / DEMO_METADATA_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["imageid", "View Position", "filename"])
            for report in reports:
                for image_id, view in zip(report.image_ids, report.views, strict=True):
                    writer.writerow([image_id, view, f"./{image_id}.dcm"])
    if layout in ("csv", "both"):
        _, n_val, n_test = demo_split_sizes(n_reports)
        label_rows = [[report.labels[label] for label in OPENI_LABELS] for report in reports]
        parts = demo_splits(label_rows, n_val, n_test, seed + 1)
        header = ["id", "report", *(MONAI_COLUMN_NAMES[label] for label in OPENI_LABELS)]
        for split, indices in parts.items():
            with (root / MONAI_SPLIT_FILES[split]).open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(header)
                for index in indices:
                    report = reports[index]
                    frontal_id = next(
                        i for i, v in zip(report.image_ids, report.views, strict=True) if v != "LL"
                    )
                    writer.writerow(
                        [
                            f"{frontal_id}.png",
                            texts[index],
                            *(report.labels[lb] for lb in OPENI_LABELS),
                        ]
                    )
                    _write_png(frontal_pixels[report.number], csv_images / f"{frontal_id}.png")
    tokenizer = build_demo_tokenizer(texts)
    tokenizer.save_pretrained(str(root / DEMO_TOKENIZER_DIR))  # type: ignore[attr-defined]
    return root


DEMO_SEED = 0
"""Seed of the demo data written by :func:`write_demo_root` (``OpenIDataModule(demo=True)``)."""


def write_demo_root(root: str | Path, n_reports: int = DEMO_REPORTS, image_size: int = 64) -> Path:
    """Write the demo dataset (both layouts + tokenizer, seed :data:`DEMO_SEED`) into ``root``.

    The data is generated in a hidden sibling folder and renamed to ``root`` in one step, so an
    interrupted run never leaves a half-written ``root``.

    Args:
        root: Missing or empty folder.
        n_reports: Number of reports.
        image_size: Image side length in pixels (>= 16).

    Returns:
        ``root`` as a ``Path``.

    Raises:
        FileExistsError: If ``root`` exists and is not an empty folder.
    """
    root = Path(root).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"root {root} is not empty but holds no OpenI data; demo=True writes the demo data "
            "only into a missing or empty folder: choose another root or empty it."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.demo-", dir=root.parent))
    try:
        make_demo_dataset(
            staging, n_reports=n_reports, image_size=image_size, seed=DEMO_SEED, layout="both"
        )
        if root.is_dir():
            root.rmdir()
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


__all__ = [
    "DEMO_METADATA_FILE",
    "DEMO_MIN_SPLIT_POSITIVES",
    "DEMO_REPORTS",
    "DEMO_SEED",
    "DEMO_TOKENIZER_DIR",
    "PREVALENCE",
    "SPECIAL_TOKENS",
    "DemoReport",
    "build_demo_tokenizer",
    "demo_split_sizes",
    "demo_splits",
    "draw_frontal",
    "draw_lateral",
    "generate_report",
    "make_demo_dataset",
    "report_xml",
    "write_demo_root",
]
