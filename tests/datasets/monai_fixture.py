"""A MONAI TransCheX OpenI folder written by hand from the published format description.

The MONAI tutorial's ``preprocess_openi.py`` writes ``train.csv``, ``validation.csv`` and
``test.csv`` with the columns ``id, report`` and the 14 labels (``Pleural_Other`` with an
underscore), one row per frontal image: ``id`` is the image FILE NAME with ``.png`` (e.g.
``CXR1_1_IM-0001-3001.png``), the image is ``images/<id>``, a report with two frontal images has
two rows (same ``CXR<n>_`` prefix, same text and labels). Reports read
``FINDINGS : ... IMPRESSION : ...``. pandas-written files may carry an index column (empty header,
or ``Unnamed: 0`` after a read/write round trip) and float labels (``0.0``/``1.0``).

Nothing here uses the library's demo generator; only the (format-independent) word-level
tokenizer builder is reused so the folder can be tokenized.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

LABEL_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged-Cardiomediastinum",
    "Fracture",
    "Lung-Lesion",
    "Lung-Opacity",
    "No-Finding",
    "Pleural-Effusion",
    "Pleural_Other",
    "Pneumonia",
    "Pneumothorax",
    "Support-Devices",
)

FINDINGS: dict[str, tuple[str, str]] = {
    "Cardiomegaly": ("The heart is enlarged.", "Cardiomegaly."),
    "Pleural-Effusion": ("Small left pleural effusion.", "Left effusion."),
    "Lung-Opacity": ("Patchy opacity in the right base.", "Right basilar opacity."),
    "Atelectasis": ("Linear atelectasis at the left base.", "Bibasilar atelectasis."),
    "Support-Devices": ("Sternotomy wires are present.", "Postoperative changes."),
}
NORMAL = ("The lungs are clear. Heart size is normal, XXXX.", "No acute cardiopulmonary disease.")

ROWS_PER_FILE: dict[str, int] = {"train.csv": 40, "validation.csv": 10, "test.csv": 10}
"""60 rows in all."""


def report_rows(n_rows: int = 60) -> list[tuple[str, str, dict[str, int]]]:
    """``(image file name, report, labels)`` rows; every third report has two frontal images."""
    rows: list[tuple[str, str, dict[str, int]]] = []
    number = 0
    names = list(FINDINGS)
    while len(rows) < n_rows:
        number += 1
        finding = names[number % len(names)] if number % 4 else None
        labels = dict.fromkeys(LABEL_COLUMNS, 0)
        if finding is None:
            labels["No-Finding"] = 1
            findings, impression = NORMAL
        else:
            labels[finding] = 1
            findings, impression = FINDINGS[finding]
        report = f"FINDINGS : {findings} IMPRESSION : {impression}"
        images = 2 if number % 3 == 0 else 1
        for k in range(images):
            if len(rows) < n_rows:
                rows.append(
                    (f"CXR{number}_1_IM-{number:04d}-{3001 + 1000 * k}.png", report, labels)
                )
    return rows


def write_monai_root(
    root: Path,
    index_column: str | None = None,
    float_labels: bool = False,
    with_extension: bool = True,
    image_size: int = 16,
) -> Path:
    """Write the three CSVs, ``images/`` and a tokenizer into ``root``.

    Args:
        root: Output folder.
        index_column: ``None`` (no index), ``""`` (``DataFrame.to_csv()``) or ``"Unnamed: 0"``.
        float_labels: Write labels as ``0.0``/``1.0``.
        with_extension: Ids with ``.png`` (published form) or without.
        image_size: PNG side length.

    Returns:
        ``root``.
    """
    from medllama_fusion.demo import build_demo_tokenizer

    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = report_rows(sum(ROWS_PER_FILE.values()))
    # reports never straddle files: cut at report boundaries
    start = 0
    rng = np.random.default_rng(0)
    for file_name, count in ROWS_PER_FILE.items():
        stop = min(start + count, len(rows))
        while (
            0 < stop < len(rows) and rows[stop][0].split("_")[0] == rows[stop - 1][0].split("_")[0]
        ):
            stop += 1
        chunk = rows[start:stop] if file_name != "test.csv" else rows[start:]
        start = stop
        header = ["id", "report", *LABEL_COLUMNS]
        if index_column is not None:
            header = [index_column, *header]
        with (root / file_name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i, (image_name, report, labels) in enumerate(chunk):
                ident = image_name if with_extension else image_name.removesuffix(".png")
                values = [
                    f"{labels[c]:.1f}" if float_labels else str(labels[c]) for c in LABEL_COLUMNS
                ]
                cells = [ident, report, *values]
                writer.writerow([str(i), *cells] if index_column is not None else cells)
                pixels = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(root / "images" / image_name)
    tokenizer = build_demo_tokenizer([report for _, report, _ in rows])
    tokenizer.save_pretrained(str(root / "tokenizer"))  # type: ignore[attr-defined]
    return root


def read_ids(root: Path, file_name: str) -> list[str]:
    """The ``id`` column of one split file."""
    with (root / file_name).open(newline="", encoding="utf-8") as handle:
        return [row["id"] for row in csv.DictReader(handle)]
