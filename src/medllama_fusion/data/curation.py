"""Curation: what a data module checks between reading its source and splitting the samples.

:func:`curate` runs once per data module ``setup``, on everything the source returned
(:class:`~medllama_fusion.datasets.LoadedSamples`):

1. checks every image it will serve (missing file; header unreadable: ``PIL.Image.verify`` /
   ``pydicom.dcmread(stop_before_pixels=True)``) and every report (empty text); a text-only run
   never looks at image files, an image-only run never needs report text,
2. checks a fixed split for leaks (the same id or report group in two splits),
3. applies the ``bad_input`` policy to the problems found (see below),
4. applies the ``missing_modality`` policy (``"keep"`` uses a sample with the modality masked
   out, ``"drop"`` leaves it out; a sample with no usable modality is never used) and logs ONE
   summary listing, by kind with counts and example ids, what was used with a modality missing
   and what was not used.

After the split, :func:`check_splits` raises for an empty split, logs the positives per class
and split and warns about classes with fewer than ``min_split_positives`` positives in
validation or test. :class:`CurationSettings` holds the settings of all of it.

The bad-input policy (:func:`apply_bad_input_policy`) collects every data problem up front, then
raises once or skips and reports:

- ``bad_input="error"`` (default) raises ONE :class:`DataProblemError` listing ALL problems,
  grouped by kind, with the offending ids/paths, so a user fixes everything in one go;
- ``bad_input="skip"`` logs the count and the list, and the data module drops the affected
  samples and keeps the list in ``datamodule.problems``. Nothing is dropped silently and nothing
  fails mid-epoch.

Every report goes to the ``logging`` logger of this module, once per run (from the first
process of a distributed run): warnings (the summary when something was left out or used
without a modality, rare classes, skipped samples, a tolerated split leak) at ``WARNING``, the
plain summary and the positives table at ``INFO``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from lightning.pytorch.utilities import rank_zero_only

from medllama_fusion.data.images import verify_image
from medllama_fusion.data.splits import positive_counts, positives_table
from medllama_fusion.datasets.base import (
    MODALITIES,
    SPLIT_NAMES,
    FusionSample,
    LoadedSamples,
    check_modalities,
)
from medllama_fusion.datasets.problems import (
    CORRUPT_IMAGE,
    EMPTY_REPORT,
    MISSING_IMAGE,
    MISSING_LABEL_COLUMN,
    DataProblem,
    DataProblemError,
    EmptySplitError,
    SplitLeakError,
    format_problems,
    group_problems,
)
from medllama_fusion.errors import InputError, check_choice

logger = logging.getLogger(__name__)


def _log(level: int, message: str) -> None:
    """Log ``message`` once per run: only the first process of a distributed run logs it."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        logger.log(level, message)


BadInput = Literal["error", "skip"]
"""``bad_input`` policy: raise once listing every problem, or drop the affected samples."""
MissingModality = Literal["keep", "drop"]
"""``missing_modality`` policy: use a sample without one modality, or leave it out."""
SplitLeak = Literal["error", "warn"]
"""``split_leak`` policy: the same sample in two fixed splits stops setup, or is reported."""
BAD_INPUT_POLICIES: tuple[str, ...] = get_args(BadInput)
MISSING_MODALITY_POLICIES: tuple[str, ...] = get_args(MissingModality)

FATAL_KINDS: tuple[str, ...] = (MISSING_LABEL_COLUMN,)
"""Problem kinds that raise even under ``bad_input="skip"`` (no sample can be dropped)."""

USED_WITHOUT_TEXT = "used without text"
USED_WITHOUT_IMAGE = "used without image"
NOT_USED = "not used"
NOTES = "notes"
SUMMARY_SECTIONS: tuple[str, ...] = (USED_WITHOUT_IMAGE, USED_WITHOUT_TEXT, NOT_USED, NOTES)
"""Sections of the data summary logged by the data modules' ``setup``."""


@dataclass(frozen=True)
class CurationSettings:
    """What curation checks and what it does with problems (see the module docstring).

    Args:
        bad_input: ``"error"`` (default: one exception listing every problem found) or
            ``"skip"`` (warn, leave the affected samples out).
        missing_modality: A sample lacking one of the served modalities (empty report, no
            image file): ``"keep"`` (default) uses it with a per-sample presence mask,
            ``"drop"`` leaves it out. Either way it is listed in the setup summary.
        verify_images: Open every image header once at setup (recommended).
        split_leak: The same image id or report in two split files (or split-column values):
            ``"error"`` (default) stops at setup naming both files and the ids; ``"warn"``
            reports it and uses the files as they are (e.g. to reproduce a published split).
        min_split_positives: Warn about classes with fewer positives than this in the
            validation or test split.
    """

    bad_input: BadInput = "error"
    missing_modality: MissingModality = "keep"
    verify_images: bool = True
    split_leak: SplitLeak = "error"
    min_split_positives: int = 5

    def __post_init__(self) -> None:
        for name, allowed in (
            ("bad_input", BadInput),
            ("missing_modality", MissingModality),
            ("split_leak", SplitLeak),
        ):
            check_choice(getattr(self, name), allowed, f"curation.{name}")


@dataclass
class CuratedSamples:
    """What :func:`curate` keeps and reports.

    Attributes:
        samples: The samples to use, in the source's order.
        image_present: Sample id → whether its image is usable (served image runs only).
        summary: Setup summary section (see :data:`SUMMARY_SECTIONS`) → entries.
        problems: Every problem found (dropped samples' included) and the source's notes.
    """

    samples: list[FusionSample]
    image_present: dict[str, bool] = field(default_factory=dict)
    summary: dict[str, list[DataProblem]] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)


def presence(
    sample: FusionSample, modalities: Sequence[str], image_absent: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Tell, per served modality, why ``sample`` lacks it (``None`` when present).

    Args:
        sample: The sample.
        modalities: The served modalities.
        image_absent: Sample id → reason for samples without an image path.

    Returns:
        Modality → ``None`` (usable) or the kind of absence (``empty_report``,
        ``missing_image``, ``no_frontal_image``, ...).
    """
    reasons: dict[str, str | None] = {}
    if "text" in modalities:
        reasons["text"] = None if sample.has_text else EMPTY_REPORT
    if "image" in modalities:
        if sample.image_path is None:
            reasons["image"] = (image_absent or {}).get(sample.id, MISSING_IMAGE)
        elif not sample.image_path.is_file():
            reasons["image"] = MISSING_IMAGE
        else:
            reasons["image"] = None
    return reasons


def check_images(samples: Sequence[FusionSample]) -> list[DataProblem]:
    """Open the header of every existing image file once.

    A missing file is not a problem here (the sample lacks a modality, see :func:`presence`);
    a file whose header cannot be read is.

    Args:
        samples: Samples to check.

    Returns:
        One ``corrupt_image`` problem per unreadable image.
    """
    problems: list[DataProblem] = []
    for sample in samples:
        if sample.image_path is None or not sample.image_path.is_file():
            continue
        error = verify_image(sample.image_path)
        if error is not None:
            problems.append(
                DataProblem(CORRUPT_IMAGE, sample.id, f"{sample.image_path} ({error})", sample.id)
            )
    return problems


def check_leaks(loaded: LoadedSamples, policy: SplitLeak, source: str) -> None:
    """Raise (or warn, under ``"warn"``) when an id or report group is in two fixed splits.

    Args:
        loaded: What the source read (nothing to check without a fixed split).
        policy: ``split_leak``.
        source: The source, named in the message.

    Raises:
        SplitLeakError: Under ``"error"`` when a sample or report is in two splits.
    """
    if loaded.splits is None:
        return
    groups = {sample.id: sample.group_key for sample in loaded.samples}
    seen_id: dict[str, str] = {}
    seen_group: dict[str, tuple[str, str]] = {}
    clashes: dict[tuple[str, str], list[str]] = {}
    for split in SPLIT_NAMES:
        for sample_id in dict.fromkeys(loaded.splits.get(split, [])):
            other = seen_id.get(sample_id)
            if other is not None and other != split:
                clashes.setdefault((other, split), []).append(f"id {sample_id}")
                continue
            seen_id.setdefault(sample_id, split)
            group = groups.get(sample_id, sample_id)
            first = seen_group.get(group)
            if first is not None and first[0] != split:
                clashes.setdefault((first[0], split), []).append(
                    f"report {group} ({first[1]} / {sample_id})"
                )
            else:
                seen_group.setdefault(group, (split, sample_id))
    if not clashes:
        return
    lines = [f"{source}: the same samples are in two splits (a leak):"]
    for (first_split, second_split), items in clashes.items():
        first_file = loaded.split_sources.get(first_split, first_split)
        second_file = loaded.split_sources.get(second_split, second_split)
        shown = ", ".join(items[:10]) + (
            f", ... ({len(items) - 10} more)" if len(items) > 10 else ""
        )
        lines.append(f"  {first_file} and {second_file}: {len(items)}: {shown}")
    if policy == "warn":
        lines.append("split_leak='warn': the splits are used as they are.")
        _log(logging.WARNING, "\n".join(lines))
        return
    lines.append(
        "Keep every image id and every report in exactly one split file, or pass "
        "split_leak: warn to use the files as they are (e.g. a published split)."
    )
    raise SplitLeakError("\n".join(lines))


def _select(
    samples: Sequence[FusionSample],
    modalities: Sequence[str],
    image_absent: Mapping[str, str],
    policy: MissingModality,
) -> tuple[list[FusionSample], dict[str, list[DataProblem]]]:
    """Apply ``missing_modality``: return the used samples and the summary sections."""
    sections: dict[str, list[DataProblem]] = {
        USED_WITHOUT_IMAGE: [],
        USED_WITHOUT_TEXT: [],
        NOT_USED: [],
    }
    used: list[FusionSample] = []
    for sample in samples:
        reasons = presence(sample, modalities, image_absent)
        missing = {m: r for m, r in reasons.items() if r is not None}
        where = "" if sample.image_path is None else str(sample.image_path)
        if not missing:
            used.append(sample)
        elif len(missing) == len(reasons) or policy == "drop":
            kind = "+".join(str(r) for r in missing.values())
            sections[NOT_USED].append(DataProblem(kind, sample.id, where, sample.id))
        else:
            used.append(sample)
            section = USED_WITHOUT_IMAGE if "image" in missing else USED_WITHOUT_TEXT
            kind = str(next(iter(missing.values())))
            sections[section].append(DataProblem(kind, sample.id, where, sample.id))
    return used, sections


def _check_some_modality_present(
    samples: Sequence[FusionSample],
    modalities: Sequence[str],
    image_absent: Mapping[str, str],
    source: str,
) -> None:
    """Raise when a served modality is absent from EVERY sample (a path/column mistake)."""
    if not samples:
        return
    reasons = [presence(sample, modalities, image_absent) for sample in samples]
    for modality in modalities:
        if any(reason[modality] is None for reason in reasons):
            continue
        other = [m for m in MODALITIES if m != modality]
        if modality == "image":
            example = next((str(s.image_path) for s in samples if s.image_path), "")
            what = "no sample has an image file" + (f" (e.g. {example})" if example else "")
            fix = "check the image folder/paths"
        else:
            what = "every report text is empty"
            fix = "check the report column/files"
        raise InputError(
            f"{source}: {what}; {fix}, or train without this modality: "
            f"`preprocessing.modalities: {other}`."
        )


def curate(
    loaded: LoadedSamples,
    modalities: Sequence[str],
    settings: CurationSettings,
    source: str,
) -> CuratedSamples:
    """Check, apply the policies and log the one setup summary (see the module docstring).

    Args:
        loaded: What the source read.
        modalities: The served modalities.
        settings: The curation settings.
        source: The source, named in messages.

    Returns:
        The samples to use, their image presence, the summary and the problems.

    Raises:
        DataProblemError: Under ``bad_input="error"`` when any problem was found.
        SplitLeakError: If a sample id or report group is in two fixed splits.
        InputError: If a served modality is absent from every sample.
    """
    served = check_modalities(modalities)
    check_leaks(loaded, settings.split_leak, source)
    checked = check_images(loaded.samples) if "image" in served and settings.verify_images else []
    found = [*loaded.problems, *checked]
    unique = {(p.kind, p.item): p for p in reversed(found)}  # reader and checks may overlap
    problems = [p for p in found if unique[(p.kind, p.item)] is p]
    drop = apply_bad_input_policy(
        problems, settings.bad_input, source=source, fatal_kinds=FATAL_KINDS
    )
    candidates = [sample for sample in loaded.samples if sample.id not in drop]
    used, sections = _select(candidates, served, loaded.image_absent, settings.missing_modality)
    _check_some_modality_present(candidates, served, loaded.image_absent, source)
    sections[NOTES] = list(loaded.notes)
    summary = format_data_summary(source, len(loaded.samples), len(used), sections)
    _log(logging.WARNING if any(sections.values()) else logging.INFO, summary)
    image_present = {
        s.id: presence(s, served, loaded.image_absent).get("image") is None for s in used
    }
    return CuratedSamples(used, image_present, sections, [*problems, *loaded.notes])


def check_splits(
    splits: Mapping[str, Sequence[FusionSample]],
    label_names: Sequence[str],
    settings: CurationSettings,
    source: str,
    origins: Mapping[str, str],
) -> None:
    """Raise for an empty split; log positives per class and split, warn about rare classes.

    Unlabelled (prediction-only) data needs only its test split.

    Args:
        splits: Split name → samples.
        label_names: Class names.
        settings: The curation settings (``min_split_positives``).
        source: The source, named in messages.
        origins: Split name → where it came from (a split file, or the seeded split), named when
            the split is empty.

    Raises:
        EmptySplitError: If a split has no samples.
    """
    unlabelled = all(s.labels is None for split in splits.values() for s in split)
    for name in ("test",) if unlabelled else SPLIT_NAMES:
        if not splits.get(name):
            raise EmptySplitError(
                f"the {name} split of {source} is empty ({origins.get(name, name)}; "
                f"{sum(len(v) for v in splits.values())} usable sample(s) in all). "
                "Provide samples for every split (see the data summary above for what was "
                "not used), or change split.sizes."
            )
    if unlabelled:
        return
    counts = positive_counts(splits, len(label_names))
    _log(logging.INFO, "positives per class and split:\n" + positives_table(counts, label_names))
    low = settings.min_split_positives
    rare = [
        f"{name}: "
        + ", ".join(
            f"{label} ({counts[name][i]})"
            for i, label in enumerate(label_names)
            if counts[name][i] < low
        )
        for name in ("val", "test")
        if any(c < low for c in counts[name])
    ]
    if rare:
        _log(
            logging.WARNING,
            f"{source}: classes with fewer than {low} positives ({'; '.join(rare)}); their "
            "AUROC there is unreliable or undefined.",
        )


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
    check_choice(bad_input, BadInput, "bad_input")
    if not problems:
        return set()
    fatal = set(fatal_kinds)
    if bad_input == "error" or any(problem.kind in fatal for problem in problems):
        raise DataProblemError(problems, source=source)
    drop = {problem.sample_id for problem in problems if problem.sample_id is not None}
    message = f"bad_input='skip': dropping {len(drop)} sample(s) because of " + format_problems(
        problems, source=source, max_per_kind=20, closing=None
    )
    _log(logging.WARNING, message)
    return drop


__all__ = [
    "BAD_INPUT_POLICIES",
    "FATAL_KINDS",
    "MISSING_MODALITY_POLICIES",
    "NOTES",
    "NOT_USED",
    "SUMMARY_SECTIONS",
    "USED_WITHOUT_IMAGE",
    "USED_WITHOUT_TEXT",
    "BadInput",
    "CuratedSamples",
    "CurationSettings",
    "MissingModality",
    "SplitLeak",
    "apply_bad_input_policy",
    "check_images",
    "check_leaks",
    "check_splits",
    "curate",
    "format_data_summary",
    "presence",
]
