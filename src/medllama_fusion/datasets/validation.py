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


def check_bad_input_policy(bad_input: str) -> str:
    """Validate a ``bad_input`` policy string.

    Args:
        bad_input: ``"error"`` or ``"skip"``.

    Returns:
        The policy.

    Raises:
        ValueError: For any other value.
    """
    if bad_input not in BAD_INPUT_POLICIES:
        raise ValueError(f"bad_input must be one of {BAD_INPUT_POLICIES}; got {bad_input!r}.")
    return bad_input


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
    "INVALID_LABEL",
    "MALFORMED_XML",
    "MISSING_IMAGE",
    "MISSING_LABEL_COLUMN",
    "NO_FRONTAL_IMAGE",
    "PROBLEM_HINTS",
    "UNKNOWN_LABEL_COLUMN",
    "UNKNOWN_SPLIT",
    "DataProblem",
    "DataProblemError",
    "apply_bad_input_policy",
    "check_bad_input_policy",
    "format_problems",
    "group_problems",
]
