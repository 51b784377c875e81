"""Read image-report-label CSV files into :class:`FusionSample` lists, collecting problems.

Two flavours share one reader (:func:`read_samples_csv`):

- the MONAI TransCheX OpenI layout as the tutorial's ``preprocess_openi.py`` writes it
  (``train.csv``/``validation.csv``/``test.csv`` with columns ``id, report, <14 labels>``, one
  row per frontal image; ``id`` is the image file name such as ``CXR1_1_IM-0001-3001.png`` and
  the image is ``images/<id>``; an id without extension means ``images/<id>.png``), see
  :data:`MONAI_SPLIT_FILES`; rows are grouped by report (the ``CXR<n>_`` prefix of the id, see
  :func:`report_group`); label columns are matched spelling-insensitively (``Pleural_Other`` ==
  ``Pleural-Other``) and any other column is reported as an unknown label column;
- generic CSVs (e.g. MIMIC-CXR exports): an image path column, a report text column, label
  columns given by name and optionally an id and a split column; other columns are ignored.

Label cells: ``1``/``1.0``/``true`` → 1, ``0``/empty → 0, ``-1`` (CheXpert "uncertain") →
``uncertain_label`` when given, otherwise an ``invalid_label`` problem, like any other value.
A pandas index column (empty header or ``Unnamed: 0``, written by ``DataFrame.to_csv`` without
``index=False``) is ignored and named in :attr:`CSVReadResult.notes`. Files are read with
``encoding`` (default UTF-8, a byte-order mark is accepted); a file in another encoding (e.g.
cp1252 from Excel) raises :class:`~medllama_fusion.data.curation.CSVEncodingError` naming
the file and line. Problems (missing label columns, invalid labels, duplicate ids) are returned,
not raised, so the caller applies the ``bad_input`` policy once for everything; an empty report
is not a problem here (the data module decides whether the sample is used without text).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medllama_fusion.datasets.base import FusionSample
from medllama_fusion.datasets.labels import column_key
from medllama_fusion.datasets.problems import (
    DUPLICATE_ID,
    INDEX_COLUMN,
    INVALID_LABEL,
    MISSING_LABEL_COLUMN,
    UNKNOWN_LABEL_COLUMN,
    CSVEncodingError,
    DataFileNotFoundError,
    DataProblem,
)
from medllama_fusion.errors import InputError

MONAI_SPLIT_FILES: dict[str, str] = {
    "train": "train.csv",
    "val": "validation.csv",
    "test": "test.csv",
}
"""Split name → file name of the MONAI TransCheX OpenI CSV layout."""

MONAI_ID_COLUMN = "id"
MONAI_TEXT_COLUMN = "report"
MONAI_IMAGE_TEMPLATE = "images/{id}"
"""MONAI image location: ``images/<id>`` (``.png`` is appended to an id without extension)."""

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
"""File name endings that mark an id as a file name (no ``.png`` is appended to it)."""

_REPORT_PREFIX = re.compile(r"^(CXR\d+)_")
_INDEX_HEADER = re.compile(r"^(|Unnamed: \d+)$")

_TRUE = {"1", "1.0", "true", "yes", "positive"}
_FALSE = {"0", "0.0", "", "false", "no", "negative", "nan"}
_UNCERTAIN = {"-1", "-1.0", "uncertain"}


def report_group(sample_id: str) -> str:
    """Return the OpenI report of an image id (``CXR12_1_IM-0125-1001.png`` → ``CXR12``).

    Args:
        sample_id: Image id or file name.

    Returns:
        The ``CXR<n>`` report id, or ``""`` when the id does not start with ``CXR<n>_``.
    """
    match = _REPORT_PREFIX.match(sample_id)
    return match.group(1) if match else ""


def template_path(template: str, sample_id: str) -> str:
    """Fill an image path template; an id without image extension gets ``.png``.

    Args:
        template: Pattern with ``{id}``, e.g. ``images/{id}``.
        sample_id: The id (``CXR1_1_IM-0001-3001.png`` or ``CXR1_1_IM-0001-3001``).

    Returns:
        The relative path.
    """
    path = template.format(id=sample_id)
    if template.endswith("{id}") and Path(sample_id).suffix.lower() not in IMAGE_SUFFIXES:
        path += ".png"
    return path


def is_index_column(name: str) -> bool:
    """Tell whether a header names a pandas index column (empty or ``Unnamed: <n>``).

    Args:
        name: Column header.

    Returns:
        ``True`` for an index column.
    """
    return bool(_INDEX_HEADER.match(name.strip()))


def csv_encoding(encoding: str) -> str:
    """Return the codec used to open CSVs (UTF-8 also accepts a byte-order mark).

    Args:
        encoding: The user's ``encoding`` setting.

    Returns:
        ``utf-8-sig`` for any UTF-8 spelling, else ``encoding``.

    Raises:
        InputError: For an encoding Python does not know.
    """
    import codecs

    try:
        name = codecs.lookup(encoding).name
    except LookupError as error:
        raise InputError(
            f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or cp1252."
        ) from error
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else encoding


def read_csv_rows(
    path: str | Path, encoding: str = "utf-8"
) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV file's header and rows, with an actionable error for a wrong encoding.

    Args:
        path: The CSV file.
        encoding: Text encoding (``utf-8`` accepts a byte-order mark).

    Returns:
        ``(fieldnames, rows)``.

    Raises:
        DataFileNotFoundError: If the file does not exist.
        CSVEncodingError: If the file cannot be decoded with ``encoding``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"CSV file {path} does not exist; check `root`/`csv_path`.")
    codec = csv_encoding(encoding)
    try:
        with path.open(newline="", encoding=codec) as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as error:
        raw = path.read_bytes()
        line = raw[: error.start].count(b"\n") + 1
        bad = raw[error.start : error.end]
        suggestion = "utf-8" if codec != "utf-8-sig" else "cp1252"
        raise CSVEncodingError(
            f"{path} line {line} is not valid {encoding} (byte(s) {bad!r}): the file was saved "
            f"in another encoding, e.g. by Excel. Pass `encoding: {suggestion}` (or the encoding "
            "it was written in), or re-save the file as UTF-8."
        ) from error
    return fieldnames, rows


def parse_label_value(cell: str | None, uncertain_label: float | None = None) -> float | None:
    """Parse one label cell.

    Args:
        cell: Raw cell text (``None`` for a missing cell in a short row).
        uncertain_label: Value for ``-1``/``uncertain`` cells; ``None`` makes them invalid.

    Returns:
        ``0.0``/``1.0`` (or ``uncertain_label``), or ``None`` when the cell is invalid.
    """
    text = (cell or "").strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    if text in _UNCERTAIN and uncertain_label is not None:
        return float(uncertain_label)
    return None


@dataclass
class CSVReadResult:
    """What :func:`read_samples_csv` found.

    Attributes:
        samples: Samples read (including ones with problems; drop them by id per policy).
        problems: Problems found.
        splits: Sample id → split name from the split column (empty without one).
        notes: Things reported but never an error (e.g. an ignored pandas index column).
    """

    samples: list[FusionSample] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)
    notes: list[DataProblem] = field(default_factory=list)


def _resolve_label_columns(
    fieldnames: Sequence[str], label_names: Sequence[str], csv_path: Path
) -> tuple[dict[str, str], list[DataProblem]]:
    """Map each label name to a CSV column (exact, else spelling-insensitive match)."""
    by_key = {column_key(name): name for name in fieldnames}
    mapping: dict[str, str] = {}
    problems: list[DataProblem] = []
    for label in label_names:
        column = label if label in fieldnames else by_key.get(column_key(label))
        if column is None:
            problems.append(
                DataProblem(
                    MISSING_LABEL_COLUMN,
                    f"{csv_path}:{label}",
                    f"label {label!r} has no column; columns are {list(fieldnames)}",
                )
            )
        else:
            mapping[label] = column
    return mapping, problems


def read_samples_csv(
    csv_path: str | Path,
    label_names: Sequence[str] | None,
    text_column: str = MONAI_TEXT_COLUMN,
    image_column: str | None = None,
    image_template: str | None = MONAI_IMAGE_TEMPLATE,
    id_column: str | None = MONAI_ID_COLUMN,
    split_column: str | None = None,
    image_root: str | Path | None = None,
    strict_columns: bool = True,
    uncertain_label: float | None = None,
    ignore_columns: Sequence[str] = (),
    encoding: str = "utf-8",
    group_by_report: bool = False,
) -> CSVReadResult:
    """Read a CSV of (image, report, labels) rows into samples and problems.

    Args:
        csv_path: The CSV file.
        label_names: Label names in output order (a file with none of their columns is read as
            unlabelled, prediction-only data). ``None`` takes every column that is not the
            id/text/image/split column or in ``ignore_columns`` as a label, in file order.
        text_column: Column with the report text.
        image_column: Column with the image path (relative to ``image_root``). Takes precedence
            over ``image_template``.
        image_template: Image path pattern with ``{id}`` relative to ``image_root`` (MONAI:
            ``images/{id}``, see :func:`template_path`); used when ``image_column`` is ``None``.
        id_column: Column with a unique sample id; ``None`` uses the image path (without suffix)
            or, failing that, ``<file stem>-<row number>``.
        split_column: Optional column naming each row's split (``train``/``val``/``test``).
        image_root: Folder image paths are relative to; defaults to the CSV's folder.
        strict_columns: Report columns that are neither id/text/image/split, nor ignored, nor
            labels as ``unknown_label_column`` problems (MONAI layout); with ``False`` they are
            ignored (generic CSVs often carry metadata columns).
        uncertain_label: Value for CheXpert-style ``-1`` cells; ``None`` reports them as invalid.
        ignore_columns: Columns to ignore without a problem.
        encoding: Text encoding of the file (``utf-8`` accepts a byte-order mark).
        group_by_report: Group rows by the OpenI report of their id (:func:`report_group`).

    Returns:
        A :class:`CSVReadResult`.

    Raises:
        DataFileNotFoundError: If ``csv_path`` does not exist.
        CSVEncodingError: If the file is not in ``encoding``.
        InputError: If the id/text/image/split columns are missing, or no image source is given.
    """
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root is not None else csv_path.parent
    if image_column is None and image_template is None:
        raise InputError("give `image_column` or `image_template` to locate the images.")
    fieldnames, rows = read_csv_rows(csv_path, encoding)
    index_columns = [name for name in fieldnames if is_index_column(name)]
    structural = [
        (arg, column)
        for arg, column in (
            ("text_column", text_column),
            ("image_column", image_column),
            ("id_column", id_column),
            ("split_column", split_column),
        )
        if column is not None
    ]
    for arg, column in structural:
        if column not in fieldnames:
            raise InputError(
                f"{arg}={column!r} is not a column of {csv_path}; columns are {fieldnames}. "
                f"Pass the right `{arg}`."
            )
    reserved = {column for _, column in structural} | set(ignore_columns) | set(index_columns)
    if label_names is None:
        label_names = [name for name in fieldnames if name not in reserved]
    mapping, problems = _resolve_label_columns(fieldnames, label_names, csv_path)
    unlabelled = bool(label_names) and not mapping  # no label column at all: predict-only data
    if unlabelled:
        problems = []
    notes = [
        DataProblem(
            INDEX_COLUMN,
            f"{csv_path}:{name!r}" if name else f"{csv_path}:'' (empty header)",
            f"column {fieldnames.index(name) + 1} {name!r} looks like a pandas index; ignored",
        )
        for name in index_columns
        if name not in reserved - set(index_columns)
    ]
    if strict_columns:
        used = reserved | set(mapping.values())
        problems.extend(
            DataProblem(
                UNKNOWN_LABEL_COLUMN,
                f"{csv_path}:{name}",
                f"column is not one of the label_names {list(label_names)}",
            )
            for name in fieldnames
            if name not in used
        )
    result = CSVReadResult(problems=problems, notes=notes)
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        image_rel = row.get(image_column) if image_column else None
        if id_column is not None:
            sample_id = (row.get(id_column) or "").strip()
        elif image_rel:
            sample_id = str(Path(image_rel).with_suffix(""))
        else:
            sample_id = f"{csv_path.stem}-{number}"
        if not sample_id:
            sample_id = f"{csv_path.stem}-{number}"
        if sample_id in seen:
            result.problems.append(
                DataProblem(DUPLICATE_ID, sample_id, f"{csv_path} line {number}", sample_id)
            )
            continue
        seen.add(sample_id)
        image_path: Path | None
        if image_column is not None:
            relative = (image_rel or "").strip()
            image_path = root / relative if relative else None
        else:
            assert image_template is not None
            image_path = root / template_path(image_template, sample_id)
        text = " ".join((row.get(text_column) or "").split())
        labels: list[float] = []
        for label in label_names:
            label_column = mapping.get(label)
            if label_column is None:
                labels.append(0.0)
                continue
            value = parse_label_value(row.get(label_column), uncertain_label)
            if value is None:
                result.problems.append(
                    DataProblem(
                        INVALID_LABEL,
                        sample_id,
                        f"{label_column}={row.get(label_column)!r} ({csv_path} line {number})",
                        sample_id,
                    )
                )
                value = 0.0
            labels.append(value)
        result.samples.append(
            FusionSample(
                id=sample_id,
                image_path=image_path,
                text=text,
                labels=None if unlabelled else tuple(labels),
                group=report_group(sample_id) if group_by_report else "",
            )
        )
        if split_column is not None:
            result.splits[sample_id] = (row.get(split_column) or "").strip()
    return result


__all__ = [
    "IMAGE_SUFFIXES",
    "MONAI_ID_COLUMN",
    "MONAI_IMAGE_TEMPLATE",
    "MONAI_SPLIT_FILES",
    "MONAI_TEXT_COLUMN",
    "CSVReadResult",
    "column_key",
    "csv_encoding",
    "is_index_column",
    "parse_label_value",
    "read_csv_rows",
    "read_samples_csv",
    "report_group",
    "template_path",
]
