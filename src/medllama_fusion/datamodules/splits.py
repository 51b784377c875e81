"""Seeded train/val/test splits by group (report or patient), so no group straddles splits."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from medllama_fusion.datasets.fusion_dataset import FusionSample

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
"""Spellings accepted in split columns (MIMIC-CXR uses ``validate``) → canonical split name."""

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
        ValueError: If ``sizes`` does not have three entries, mixes negative values, fractions do
            not sum to 1, or counts exceed ``num_groups``.
    """
    if len(sizes) != 3:
        raise ValueError(f"split_sizes needs three entries (train, val, test); got {sizes}.")
    if any(value < 0 for value in sizes):
        raise ValueError(f"split_sizes must be non-negative; got {sizes}.")
    if all(isinstance(value, int) and not isinstance(value, bool) for value in sizes):
        counts = (int(sizes[0]), int(sizes[1]), int(sizes[2]))
        if sum(counts) > num_groups:
            raise ValueError(
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
        raise ValueError(
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


__all__ = [
    "PAPER_SPLIT_FRACTIONS",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "split_counts",
    "split_samples",
]
