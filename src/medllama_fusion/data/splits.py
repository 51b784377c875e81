"""Seeded train/val/test splits by group (report or patient), so no group straddles splits.

:func:`stratified_split_samples` (used by the data modules for labelled data) is a multi-label
iterative stratification (Sechidis, Tsoumakas & Vlahavas, 2011) over groups: each group (all
images of one report, or all studies of one patient) carries the union of its samples' labels and
is assigned as a whole, rarest label first, to the split that still lacks most positives of that
label; every split with a non-zero share first gets ``min_positives_per_split`` positive groups of
each class that has enough of them (that many per such split), the rest follows the shares.
:func:`split_samples` is the plain seeded shuffle. :func:`positives_table` renders positives per
class per split for the setup log (a Markdown table). :class:`SplitSettings` holds a data
module's split settings and :func:`assign_splits` applies them: a source's fixed split when it has
one, else the seeded split.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from medllama_fusion.datasets.base import SPLIT_ALIASES, SPLIT_NAMES, FusionSample
from medllama_fusion.errors import InputError
from medllama_fusion.metrics import markdown_table

logger = logging.getLogger(__name__)

PAPER_SPLIT_FRACTIONS: tuple[float, float, float] = (0.87, 0.03, 0.10)
"""The paper's OpenI proportions (3199/101/377 of 3677 reports), rounded."""


def split_counts(num_groups: int, sizes: Sequence[float] | Sequence[int]) -> tuple[int, int, int]:
    """Turn split sizes (fractions or counts) into group counts.

    Args:
        num_groups: Number of groups (reports/patients) to split.
        sizes: Three fractions (floats in ``[0, 1]`` summing to 1 within 1e-6; val and test are
            rounded, train gets the rest) or three counts (ints summing to at most
            ``num_groups``; groups beyond the sum are left out with a warning).

    Returns:
        ``(n_train, n_val, n_test)``.

    Raises:
        InputError: If ``sizes`` does not have three entries, mixes negative values, fractions do
            not sum to 1, or counts exceed ``num_groups``.
    """
    if len(sizes) != 3:
        raise InputError(f"split_sizes needs three entries (train, val, test); got {sizes}.")
    if any(value < 0 for value in sizes):
        raise InputError(f"split_sizes must be non-negative; got {sizes}.")
    if all(isinstance(value, int) and not isinstance(value, bool) for value in sizes):
        counts = (int(sizes[0]), int(sizes[1]), int(sizes[2]))
        if sum(counts) > num_groups:
            raise InputError(
                f"split_sizes {counts} ask for {sum(counts)} reports but only {num_groups} are "
                "available; lower the counts or use fractions."
            )
        if sum(counts) < num_groups:
            logger.warning(
                "split_sizes %s use %d of %d reports; the rest is left out.",
                counts,
                sum(counts),
                num_groups,
            )
        return counts
    fractions = [float(value) for value in sizes]
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError(
            f"split_sizes fractions must sum to 1; got {sizes} (sum {sum(fractions)}). "
            "Pass three fractions or three integer counts."
        )
    n_val = round(fractions[1] * num_groups)
    n_test = round(fractions[2] * num_groups)
    return num_groups - n_val - n_test, n_val, n_test


def split_samples(
    samples: Sequence[FusionSample],
    sizes: Sequence[float] | Sequence[int] = PAPER_SPLIT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[FusionSample]]:
    """Split samples into train/val/test by :attr:`FusionSample.group_key`, deterministically.

    Groups are sorted, shuffled with ``random.Random(seed)`` and cut by :func:`split_counts`;
    all samples of a group (e.g. the images of one report) land in the same split. The result
    does not depend on the input order.

    Args:
        samples: Samples to split.
        sizes: Fractions or counts of groups, see :func:`split_counts`.
        seed: Shuffle seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.
    """
    groups = sorted({sample.group_key for sample in samples})
    random.Random(seed).shuffle(groups)
    n_train, n_val, n_test = split_counts(len(groups), sizes)
    assignment: dict[str, str] = {}
    for name, chunk in zip(
        SPLIT_NAMES,
        (
            groups[:n_train],
            groups[n_train : n_train + n_val],
            groups[n_train + n_val : n_train + n_val + n_test],
        ),
        strict=True,
    ):
        assignment.update(dict.fromkeys(chunk, name))
    result: dict[str, list[FusionSample]] = {name: [] for name in SPLIT_NAMES}
    for sample in samples:
        split = assignment.get(sample.group_key)
        if split is not None:
            result[split].append(sample)
    return result


def _group_labels(samples: Sequence[FusionSample]) -> dict[str, set[int]]:
    """Map each group key to the union of its samples' positive label indices."""
    groups: dict[str, set[int]] = {}
    for sample in samples:
        positives = groups.setdefault(sample.group_key, set())
        if sample.labels is not None:
            positives.update(i for i, value in enumerate(sample.labels) if value >= 0.5)
    return groups


def stratified_split_samples(
    samples: Sequence[FusionSample],
    sizes: Sequence[float] | Sequence[int] = PAPER_SPLIT_FRACTIONS,
    seed: int = 0,
    min_positives_per_split: int = 1,
) -> dict[str, list[FusionSample]]:
    """Split by group with multi-label iterative stratification (see the module docstring).

    Hand-written because no maintained library stratifies multi-label data *by group*
    (scikit-learn's ``StratifiedGroupKFold`` is single-label, iterstrat/scikit-multilearn ignore
    groups). Group counts per split equal :func:`split_counts` exactly; the result is
    deterministic for a seed and does not depend on the input order.

    Args:
        samples: Samples to split (unlabelled samples count as groups without positives).
        sizes: Fractions or counts of groups, see :func:`split_counts`.
        seed: Seed of the tie-breaking and of the order within a label.
        min_positives_per_split: A class with at least this many positive groups per split
            (with a non-zero share) asks for at least this many positives in each such split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.
    """
    rng = random.Random(seed)
    group_labels = _group_labels(samples)
    keys = sorted(group_labels)
    rng.shuffle(keys)
    capacity = list(split_counts(len(keys), sizes))
    total = sum(capacity)
    if total == 0:
        return {name: [] for name in SPLIT_NAMES}
    shares = [count / total for count in capacity]
    num_labels = max((max(labels) + 1 for labels in group_labels.values() if labels), default=0)
    positives = [sum(1 for k in keys if label in group_labels[k]) for label in range(num_labels)]
    active = [i for i, count in enumerate(capacity) if count > 0]
    wanted = [[share * count for share in shares] for count in positives]
    quota = [
        [
            min_positives_per_split
            if i in active and count >= min_positives_per_split * len(active)
            else 0
            for i in range(3)
        ]
        for count in positives
    ]
    assignment: dict[str, int] = {}
    remaining = set(keys)

    def assign(key: str, label: int | None) -> None:
        open_splits = [i for i in range(3) if capacity[i] > 0]
        if label is None:
            best = max(capacity[i] for i in open_splits)
            choices = [i for i in open_splits if capacity[i] == best]
        else:
            needy = [i for i in open_splits if quota[label][i] > 0]
            pool = needy or open_splits
            best_want = max(wanted[label][i] for i in pool)
            choices = [i for i in pool if wanted[label][i] == best_want]
            best_cap = max(capacity[i] for i in choices)
            choices = [i for i in choices if capacity[i] == best_cap]
        split = choices[0] if len(choices) == 1 else rng.choice(choices)
        assignment[key] = split
        capacity[split] -= 1
        for positive in group_labels[key]:
            wanted[positive][split] -= 1
            quota[positive][split] = max(0, quota[positive][split] - 1)
        remaining.discard(key)

    while remaining and sum(capacity) > 0:
        counts = [
            sum(1 for k in remaining if label in group_labels[k]) for label in range(num_labels)
        ]
        candidates = [label for label, count in enumerate(counts) if count > 0]
        if not candidates:
            break
        rarest = min(counts[label] for label in candidates)
        label = rng.choice([lb for lb in candidates if counts[lb] == rarest])
        for key in [k for k in keys if k in remaining and label in group_labels[k]]:
            if sum(capacity) == 0:
                break
            assign(key, label)
    for key in [k for k in keys if k in remaining]:
        if sum(capacity) == 0:
            break
        assign(key, None)
    result: dict[str, list[FusionSample]] = {name: [] for name in SPLIT_NAMES}
    for sample in samples:
        split = assignment.get(sample.group_key)
        if split is not None:
            result[SPLIT_NAMES[split]].append(sample)
    return result


@dataclass(frozen=True)
class SplitSettings:
    """How data without a fixed split is split into train/val/test.

    Args:
        sizes: Train/val/test fractions or group (report/patient) counts (see
            :func:`split_counts`); default the paper's proportions.
        seed: Seed of the split.
        stratify: Multi-label stratification by group (default); ``False`` shuffles groups only.
    """

    sizes: tuple[int, int, int] | tuple[float, float, float] = PAPER_SPLIT_FRACTIONS
    seed: int = 0
    stratify: bool = True

    def describe(self) -> str:
        """The settings as shown in messages."""
        return f"the seeded split (split.sizes={list(self.sizes)}, split.seed={self.seed})"


def assign_splits(
    samples: Sequence[FusionSample],
    fixed: Mapping[str, Sequence[str]] | None,
    settings: SplitSettings,
) -> dict[str, list[FusionSample]]:
    """Put each sample into its split: the source's fixed split, else the seeded one.

    Unlabelled data is prediction-only: all of it is the test split.

    Args:
        samples: The samples to split (after curation).
        fixed: Split name → sample ids, when the source defines the split.
        settings: The seeded split's settings.

    Returns:
        Split name → samples (every name of :data:`SPLIT_NAMES`).
    """
    if fixed is not None:
        by_id = {sample.id: sample for sample in samples}
        return {name: [by_id[i] for i in fixed.get(name, []) if i in by_id] for name in SPLIT_NAMES}
    if samples and all(sample.labels is None for sample in samples):
        return {"train": [], "val": [], "test": list(samples)}
    if settings.stratify:
        return stratified_split_samples(samples, settings.sizes, settings.seed)
    return split_samples(samples, settings.sizes, settings.seed)


def positive_counts(
    splits: Mapping[str, Sequence[FusionSample]], num_labels: int
) -> dict[str, list[int]]:
    """Count positive samples per class in each split.

    Args:
        splits: Split name → samples.
        num_labels: Number of classes.

    Returns:
        Split name → positives per class (unlabelled samples count as negatives).
    """
    counts: dict[str, list[int]] = {}
    for name, samples in splits.items():
        row = [0] * num_labels
        for sample in samples:
            if sample.labels is not None:
                for i, value in enumerate(sample.labels[:num_labels]):
                    row[i] += int(value >= 0.5)
        counts[name] = row
    return counts


def positives_table(counts: Mapping[str, Sequence[int]], label_names: Sequence[str]) -> str:
    """Render positives per class (rows) and split (columns) as an aligned Markdown table.

    Args:
        counts: From :func:`positive_counts`.
        label_names: Class names.

    Returns:
        The table: a ``class`` column, then one right-aligned column per split.
    """
    names = list(counts)
    rows = [[label, *(counts[n][i] for n in names)] for i, label in enumerate(label_names)]
    right: list[Literal["left", "right"]] = ["right"] * len(names)
    return markdown_table(["class", *names], rows, ["left", *right])


__all__ = [
    "PAPER_SPLIT_FRACTIONS",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "SplitSettings",
    "assign_splits",
    "positive_counts",
    "positives_table",
    "split_counts",
    "split_samples",
    "stratified_split_samples",
]
