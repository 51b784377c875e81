"""Bad-input policy: collect every data problem up front, then raise once or skip and report.

Data modules check their inputs at ``setup`` (missing/corrupt image files, empty reports,
malformed XML reported by the OpenI parser, unknown or missing label columns, invalid label
values) and hand the collected :class:`DataProblem` list to :func:`apply_bad_input_policy`:

- ``bad_input="error"`` (default) raises ONE :class:`DataProblemError` listing ALL problems,
  grouped by kind, with the offending ids/paths, so a user fixes everything in one go;
- ``bad_input="skip"`` logs the count and the list (``logging`` and Lightning's
  ``rank_zero_warn``), and the data module drops the affected samples and keeps the list in
  ``datamodule.problems``. Nothing is dropped silently and nothing fails mid-epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lightning.pytorch.utilities import rank_zero_warn

from medllama_fusion.errors import InputError

logger = logging.getLogger(__name__)

BAD_INPUT_POLICIES: tuple[str, ...] = ("error", "skip")
MISSING_MODALITY_POLICIES: tuple[str, ...] = ("keep", "drop")

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

USED_WITHOUT_TEXT = "used without text"
USED_WITHOUT_IMAGE = "used without image"
NOT_USED = "not used"
NOTES = "notes"
SUMMARY_SECTIONS: tuple[str, ...] = (USED_WITHOUT_IMAGE, USED_WITHOUT_TEXT, NOT_USED, NOTES)
"""Sections of the data summary logged by the data modules' ``setup``."""


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


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise an error naming ``name``."""
    if value not in choices:
        raise InputError(f"{name} must be one of {tuple(choices)}; got {value!r}.")
    return value


def check_missing_modality_policy(missing_modality: str) -> str:
    """Validate a ``missing_modality`` policy string.

    Args:
        missing_modality: ``"keep"`` or ``"drop"``.

    Returns:
        The policy.

    Raises:
        InputError: For any other value.
    """
    return _check_choice("missing_modality", missing_modality, MISSING_MODALITY_POLICIES)


def format_data_summary(
    source: str,
    n_read: int,
    n_used: int,
    sections: dict[str, list[DataProblem]],
    examples: int = 5,
) -> str:
    """Render the one data summary: what was used with a modality missing, what was not used.

    Args:
        source: The data source, named in the first line.
        n_read: Number of items read.
        n_used: Number of samples used.
        sections: Section name (see :data:`SUMMARY_SECTIONS`) → entries; each entry's ``kind``
            groups it and its ``item`` is shown as an example id.
        examples: Example ids shown per kind.

    Returns:
        The multi-line summary.
    """
    lines = [f"{source}: {n_read} item(s) read, {n_used} used."]
    for section in SUMMARY_SECTIONS:
        entries = sections.get(section, [])
        if not entries:
            continue
        lines.append(f"  {section} ({len(entries)}):")
        for kind, items in group_problems(entries).items():
            shown = ", ".join(problem.item for problem in items[:examples])
            more = f", ... ({len(items) - examples} more)" if len(items) > examples else ""
            detail = f" [{items[0].detail}]" if section == NOTES and items[0].detail else ""
            lines.append(f"    {kind} ({len(items)}): {shown}{more}{detail}")
    return "\n".join(lines)


def check_bad_input_policy(bad_input: str) -> str:
    """Validate a ``bad_input`` policy string.

    Args:
        bad_input: ``"error"`` or ``"skip"``.

    Returns:
        The policy.

    Raises:
        InputError: For any other value.
    """
    return _check_choice("bad_input", bad_input, BAD_INPUT_POLICIES)


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
    closing: str | None = "Fix the data, or pass bad_input='skip' to drop the affected samples.",
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


def apply_bad_input_policy(
    problems: Sequence[DataProblem],
    bad_input: str,
    source: str = "input data",
    fatal_kinds: Iterable[str] = (),
) -> set[str]:
    """Raise or report the collected problems according to ``bad_input``.

    Args:
        problems: All problems found.
        bad_input: ``"error"`` (raise once) or ``"skip"`` (log and return the ids to drop).
        source: What was checked, for the message.
        fatal_kinds: Kinds that raise even under ``"skip"`` because no sample can be dropped to
            fix them (e.g. a requested label column that does not exist).

    Returns:
        Sample ids to drop (empty when there are no problems).

    Raises:
        DataProblemError: Under ``"error"`` when there is any problem, or under ``"skip"`` when a
            problem of a ``fatal_kinds`` kind exists.
    """
    check_bad_input_policy(bad_input)
    if not problems:
        return set()
    fatal = set(fatal_kinds)
    if bad_input == "error" or any(problem.kind in fatal for problem in problems):
        raise DataProblemError(problems, source=source)
    drop = {problem.sample_id for problem in problems if problem.sample_id is not None}
    message = f"bad_input='skip': dropping {len(drop)} sample(s) because of " + format_problems(
        problems, source=source, max_per_kind=20, closing=None
    )
    logger.warning(message)
    rank_zero_warn(message)
    return drop


__all__ = [
    "BAD_INPUT_POLICIES",
    "CORRUPT_IMAGE",
    "DUPLICATE_ID",
    "EMPTY_REPORT",
    "INDEX_COLUMN",
    "INVALID_LABEL",
    "MALFORMED_XML",
    "MISSING_IMAGE",
    "MISSING_LABEL_COLUMN",
    "MISSING_MODALITY_POLICIES",
    "NOTES",
    "NOT_USED",
    "NO_FRONTAL_IMAGE",
    "NO_USABLE_MODALITY",
    "PROBLEM_HINTS",
    "SUMMARY_SECTIONS",
    "UNKNOWN_LABEL_COLUMN",
    "UNKNOWN_SPLIT",
    "USED_WITHOUT_IMAGE",
    "USED_WITHOUT_TEXT",
    "CSVEncodingError",
    "DataFileNotFoundError",
    "DataProblem",
    "DataProblemError",
    "EmptySplitError",
    "SplitLeakError",
    "apply_bad_input_policy",
    "check_bad_input_policy",
    "check_missing_modality_policy",
    "format_data_summary",
    "format_problems",
    "group_problems",
]
