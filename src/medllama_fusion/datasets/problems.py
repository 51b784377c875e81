"""Data problems a source reports while reading its files, and the errors naming them.

A source dataset (:mod:`medllama_fusion.datasets`) never raises for a bad sample: it returns
every :class:`DataProblem` it met beside the samples it read, each with its kind (one of the
constants below), the offending id, file or column, and a detail. The data module's curation
step (:mod:`medllama_fusion.data.curation`) then applies the bad-input policy to all of them at
once. :func:`format_problems` renders them grouped by kind with one fix hint per kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medllama_fusion.errors import InputError

MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
EMPTY_REPORT = "empty_report"
MALFORMED_XML = "malformed_xml"
UNKNOWN_LABEL_COLUMN = "unknown_label_column"
MISSING_LABEL_COLUMN = "missing_label_column"
INVALID_LABEL = "invalid_label"
NO_FRONTAL_IMAGE = "no_frontal_image"
DUPLICATE_ID = "duplicate_id"
UNKNOWN_SPLIT = "unknown_split"
INDEX_COLUMN = "index_column"
NO_USABLE_MODALITY = "no_usable_modality"

PROBLEM_HINTS: dict[str, str] = {
    MISSING_IMAGE: "restore the files or fix the image root/paths",
    CORRUPT_IMAGE: "re-download or re-export these images",
    EMPTY_REPORT: "fill in the report text or remove these rows",
    MALFORMED_XML: "re-extract the report archive or delete these XML files",
    UNKNOWN_LABEL_COLUMN: "add the columns to `label_names` or remove them from the CSV",
    MISSING_LABEL_COLUMN: "add the columns to the CSV or drop them from `label_names`",
    INVALID_LABEL: "use 0/1 (or empty for 0) in label columns",
    NO_FRONTAL_IMAGE: "check `views`/`metadata_csv` or provide frontal images",
    DUPLICATE_ID: "make the ids unique",
    UNKNOWN_SPLIT: "use train/val/test (or train/validate/test) in the split column",
    INDEX_COLUMN: "a pandas index column; write the CSV with index=False to silence this",
    NO_USABLE_MODALITY: "the item has neither a usable report nor a usable image",
}


@dataclass(frozen=True)
class DataProblem:
    """One problem found in the input data.

    Attributes:
        kind: Problem kind, one of the module constants (e.g. ``"missing_image"``).
        item: Offending sample id, file path or column name.
        detail: Human-readable detail (e.g. the decoder error message).
        sample_id: Id of the sample to drop under ``bad_input="skip"``; ``None`` when the
            problem does not belong to one sample (e.g. an unknown CSV column, a broken XML file
            that yields no sample at all).
    """

    kind: str
    item: str
    detail: str = ""
    sample_id: str | None = None

    def __str__(self) -> str:
        """Return ``item: detail`` (or just ``item``)."""
        return f"{self.item}: {self.detail}" if self.detail else self.item


class DataProblemError(InputError):
    """Raised under ``bad_input="error"``; lists all problems grouped by kind.

    Attributes:
        problems: The problems, in the order found.
    """

    def __init__(self, problems: Sequence[DataProblem], source: str = "input data") -> None:
        self.problems = list(problems)
        super().__init__(format_problems(self.problems, source=source, max_per_kind=50))


class EmptySplitError(InputError):
    """A train/val/test split ended up with no samples."""


class SplitLeakError(InputError):
    """The same sample id or report group appears in two splits."""


class DataFileNotFoundError(InputError, FileNotFoundError):
    """A data file or folder the settings point to does not exist."""


class CSVEncodingError(InputError):
    """A CSV file is not in the expected text encoding."""


def group_problems(problems: Iterable[DataProblem]) -> dict[str, list[DataProblem]]:
    """Group problems by kind, keeping first-seen order of kinds and items.

    Args:
        problems: Problems to group.

    Returns:
        Mapping kind → problems of that kind.
    """
    grouped: dict[str, list[DataProblem]] = {}
    for problem in problems:
        grouped.setdefault(problem.kind, []).append(problem)
    return grouped


def format_problems(
    problems: Sequence[DataProblem],
    source: str = "input data",
    max_per_kind: int | None = None,
    closing: str | None = (
        "Fix the data, or set bad_input='skip' (--data.init_args.curation.bad_input skip) to "
        "drop the affected samples."
    ),
) -> str:
    """Render problems as a multi-line message grouped by kind, with a fix hint per kind.

    Args:
        problems: Problems to render.
        source: What was checked (e.g. the data root), named in the first line.
        max_per_kind: Show at most this many items per kind (``None``: all).
        closing: Last line (what to do), or ``None`` for none.

    Returns:
        The message.
    """
    lines = [f"{len(problems)} problem(s) in {source}:"]
    for kind, items in group_problems(problems).items():
        hint = PROBLEM_HINTS.get(kind, "fix or remove these inputs")
        lines.append(f"  {kind} ({len(items)}) - {hint}:")
        shown = items if max_per_kind is None else items[:max_per_kind]
        lines.extend(f"    {problem}" for problem in shown)
        if len(shown) < len(items):
            lines.append(f"    ... and {len(items) - len(shown)} more")
    if closing:
        lines.append(closing)
    return "\n".join(lines)


__all__ = [
    "CORRUPT_IMAGE",
    "DUPLICATE_ID",
    "EMPTY_REPORT",
    "INDEX_COLUMN",
    "INVALID_LABEL",
    "MALFORMED_XML",
    "MISSING_IMAGE",
    "MISSING_LABEL_COLUMN",
    "NO_FRONTAL_IMAGE",
    "NO_USABLE_MODALITY",
    "PROBLEM_HINTS",
    "UNKNOWN_LABEL_COLUMN",
    "UNKNOWN_SPLIT",
    "CSVEncodingError",
    "DataFileNotFoundError",
    "DataProblem",
    "DataProblemError",
    "EmptySplitError",
    "SplitLeakError",
    "format_problems",
    "group_problems",
]
