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

from lightning.pytorch.utilities import rank_zero_warn

from medllama_fusion.datasets.problems import (
    DataProblem,
    DataProblemError,
    format_problems,
    group_problems,
)
from medllama_fusion.errors import InputError

logger = logging.getLogger(__name__)

BAD_INPUT_POLICIES: tuple[str, ...] = ("error", "skip")
MISSING_MODALITY_POLICIES: tuple[str, ...] = ("keep", "drop")

USED_WITHOUT_TEXT = "used without text"
USED_WITHOUT_IMAGE = "used without image"
NOT_USED = "not used"
NOTES = "notes"
SUMMARY_SECTIONS: tuple[str, ...] = (USED_WITHOUT_IMAGE, USED_WITHOUT_TEXT, NOT_USED, NOTES)
"""Sections of the data summary logged by the data modules' ``setup``."""


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
    "MISSING_MODALITY_POLICIES",
    "NOTES",
    "NOT_USED",
    "SUMMARY_SECTIONS",
    "USED_WITHOUT_IMAGE",
    "USED_WITHOUT_TEXT",
    "apply_bad_input_policy",
    "check_bad_input_policy",
    "check_missing_modality_policy",
    "format_data_summary",
]
