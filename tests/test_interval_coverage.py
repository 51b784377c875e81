"""The 95 % intervals of ``auroc_report`` cover the true AUROC at 10 and 40 positive reports.

A fast, deterministic version of ``benchmarks/interval_coverage.py`` (``docs/intervals.md``):
test sets of 377 reports with binormal scores (negatives ``N(0, 1)``, positives ``N(d, 1)``,
population AUROC ``Phi(d / sqrt 2)``), exactly ``k`` positive reports per class, one row per
report or two rows per report whose scores share a report-level component (correlation 0.7).

* per class: ``d = 1.5`` (AUROC 0.856), ``PER_CLASS_SETS`` sets, all scored by one
  ``auroc_report`` call (each set is one column);
* macro: five classes with ``d`` = 1.0 ... 3.0, ``MACRO_SETS`` sets, one ``auroc_report`` each.

The library promises 92.5-97.5 % coverage from 10 positive reports on. With ``n`` sets the
Monte-Carlo standard error of a coverage near 95 % is ``sqrt(0.95 * 0.05 / n)``: 0.49 points for
2000 sets, 1.1 for 400. The band checked is the promise widened by two standard errors, so a
method whose true coverage lies in the promised band passes with probability >= 97.5 % per
setting; the seeds are fixed, so the outcome is deterministic. The cluster percentile bootstrap
(``method="bootstrap"``, the library's method before) covers 85-89 % per class at 10 positive
reports and fails this test.
"""

from __future__ import annotations

import math

import pytest
import torch

from medllama_fusion.metrics import IntervalMethod, auroc_report

REPORTS = 377
RHO = 0.7
PER_CLASS_SETS = 2000
MACRO_SETS = 400
MACRO_SHIFTS = (1.0, 1.5, 2.0, 2.5, 3.0)
PROMISED = (0.925, 0.975)


def band(sets: int) -> tuple[float, float]:
    """The promised band widened by two Monte-Carlo standard errors (at 95 % coverage)."""
    se = math.sqrt(0.95 * 0.05 / sets)
    return PROMISED[0] - 2 * se, PROMISED[1] + 2 * se


def simulate(
    seed: int, rows: int, positives: int, shifts: tuple[float, ...], sets: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sets`` test sets as columns: scores, labels ``[N, sets * C]``, groups ``[N]``, truth."""
    gen = torch.Generator().manual_seed(seed)
    classes = len(shifts)
    columns = sets * classes
    ranks = torch.rand(REPORTS, columns, generator=gen).argsort(0).argsort(0)
    labels = (ranks < positives).double().repeat_interleave(rows, dim=0)
    shared = torch.randn(REPORTS, 1, columns, generator=gen, dtype=torch.float64)
    own = torch.randn(REPORTS, rows, columns, generator=gen, dtype=torch.float64)
    rho = RHO if rows > 1 else 0.0
    noise = (math.sqrt(rho) * shared + math.sqrt(1 - rho) * own).reshape(REPORTS * rows, columns)
    d = torch.tensor(shifts, dtype=torch.float64)
    scores = d.repeat(sets) * labels + noise
    groups = torch.arange(REPORTS).repeat_interleave(rows)
    truth = torch.special.ndtr(d / math.sqrt(2.0))
    return scores, labels.long(), groups, truth


def per_class_coverage(
    positives: int, rows: int, method: IntervalMethod = "newcombe", sets: int = PER_CLASS_SETS
) -> float:
    scores, labels, groups, truth = simulate(positives * 10 + rows, rows, positives, (1.5,), sets)
    report = auroc_report(
        scores, labels, [str(i) for i in range(sets)], groups=groups, method=method
    )
    low, high = torch.tensor(report.ci_low), torch.tensor(report.ci_high)
    return float(((low <= truth) & (truth <= high)).double().mean())


def macro_coverage(
    positives: int, rows: int, method: IntervalMethod = "newcombe", sets: int = MACRO_SETS
) -> float:
    scores, labels, groups, truth = simulate(
        positives * 10 + rows + 1, rows, positives, MACRO_SHIFTS, sets
    )
    classes = len(MACRO_SHIFTS)
    names = [f"class_{c}" for c in range(classes)]
    hits = 0
    for s in range(sets):
        cols = slice(s * classes, (s + 1) * classes)
        report = auroc_report(scores[:, cols], labels[:, cols], names, groups=groups, method=method)
        assert all(report.in_mean)
        hits += int(report.mean_ci[0] <= float(truth.mean()) <= report.mean_ci[1])
    return hits / sets


SETTINGS = [(10, 1), (10, 2), (40, 1), (40, 2)]


@pytest.mark.parametrize(("positives", "rows"), SETTINGS)
def test_per_class_intervals_cover(positives: int, rows: int) -> None:
    low, high = band(PER_CLASS_SETS)
    assert low <= per_class_coverage(positives, rows) <= high


@pytest.mark.parametrize(("positives", "rows"), SETTINGS)
def test_macro_intervals_cover(positives: int, rows: int) -> None:
    low, high = band(MACRO_SETS)
    assert low <= macro_coverage(positives, rows) <= high
