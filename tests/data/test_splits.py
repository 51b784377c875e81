"""Multi-label stratified splits grouped by report."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from medllama_fusion.data.splits import (
    positive_counts,
    positives_table,
    split_samples,
    stratified_split_samples,
)
from medllama_fusion.datasets.base import FusionSample

RATE = (0.4, 0.2, 0.05, 0.02, 0.01)  # common → rare classes


def synthetic(n_reports: int = 600, seed: int = 0) -> list[FusionSample]:
    rng = random.Random(seed)
    samples = []
    for report in range(n_reports):
        labels = tuple(float(rng.random() < rate) for rate in RATE)
        for image in range(1 + (report % 3 == 0)):  # every third report has two images
            samples.append(
                FusionSample(
                    id=f"CXR{report}_{image}",
                    image_path=Path("x.png"),
                    text="t",
                    labels=labels,
                    group=f"CXR{report}",
                )
            )
    return samples


def test_stratified_split_is_exact_grouped_and_deterministic() -> None:
    samples = synthetic()
    first = stratified_split_samples(samples, (0.8, 0.05, 0.15), seed=0)
    again = stratified_split_samples(list(reversed(samples)), (0.8, 0.05, 0.15), seed=0)
    other = stratified_split_samples(samples, (0.8, 0.05, 0.15), seed=1)
    ids = {k: sorted(s.id for s in v) for k, v in first.items()}
    assert ids == {k: sorted(s.id for s in v) for k, v in again.items()}
    assert ids != {k: sorted(s.id for s in v) for k, v in other.items()}
    groups = {k: {s.group for s in v} for k, v in first.items()}
    assert [len(groups[k]) for k in ("train", "val", "test")] == [480, 30, 90]
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    counts = stratified_split_samples(samples, (300, 100, 100), seed=0)
    assert [len({s.group for s in counts[k]}) for k in ("train", "val", "test")] == [
        300,
        100,
        100,
    ]


@pytest.mark.parametrize("seed", range(5))
def test_rare_classes_reach_val_and_test(seed: int) -> None:
    samples = synthetic(seed=seed)
    splits = stratified_split_samples(samples, (0.87, 0.03, 0.10), seed=seed)
    counts = positive_counts(splits, len(RATE))
    total = [sum(counts[k][i] for k in counts) for i in range(len(RATE))]
    for i in range(len(RATE)):
        if total[i] >= 6:
            assert counts["val"][i] >= 1 and counts["test"][i] >= 1, (i, counts)
    # both splitters keep every sample exactly once
    plain = positive_counts(split_samples(samples, (0.87, 0.03, 0.10), seed=seed), len(RATE))
    assert sum(plain[k][i] for k in plain for i in range(len(RATE))) == sum(total)


def test_positives_table_lists_each_class_and_split() -> None:
    table = positives_table({"train": [3, 0], "val": [1, 2], "test": [0, 5]}, ["A", "Bb"])
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    assert lines[0] == ["class", "train", "val", "test"]
    assert lines[1] == ["-------", "------:", "----:", "-----:"]  # counts right-aligned
    assert lines[2] == ["A", "3", "1", "0"] and lines[3] == ["Bb", "0", "2", "5"]
