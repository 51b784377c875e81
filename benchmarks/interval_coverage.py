r"""Coverage of 95 % AUROC intervals by simulation: which method to trust at few positives.

Every simulated test set has ``--reports`` reports (377 by default), either one row per report
or two rows per report (two images of one report: their scores share a report-level component,
correlation ``--rho`` = 0.7 between the two rows; both rows carry the report's labels). A class
has exactly ``k`` positive reports (5, 10, 20, 40). Scores are binormal: a negative row scores
``N(0, 1)``, a positive ``N(d, 1)``, so the population AUROC is ``Phi(d / sqrt 2)``.

* **per class**: one class, ``d = 1.5`` (AUROC 0.856); a second table repeats it at
  ``d = 2.5`` (AUROC 0.962), the range of real models' per-class AUROCs.
* **macro**: the mean over five classes with ``d`` = 1.0, 1.5, 2.0, 2.5, 3.0 (AUROC 0.760,
  0.856, 0.921, 0.962, 0.983), each with ``k`` positive reports placed independently.
  ``real mix`` is the 14 classes of the library's OpenI test split (positive reports 66, 79,
  6, 20, 15, 17, 26, 143, 273, 33, 25, 8, 5, 76 among 393, scaled to ``--reports``) with the
  five separations in turn, averaged over the classes with at least ``--real-min`` positive
  reports.
* **paired difference**: two models scored on the same sets, their noise correlated
  (``--model-rho`` = 0.6); model A has ``d = 1.5`` (macro: the five separations above), model
  B the same (``null``, true difference 0) or 0.5 less (``A better``). The interval is that of
  ``AUROC_A - AUROC_B``; under the null, 100 % minus its coverage is the false-positive rate of
  the p-value at 0.05.

Coverage is the share of sets whose interval holds the population value, with its Monte-Carlo
standard error ``sqrt(p (1 - p) / sets)``. The methods:

* ``percentile``: the cluster percentile bootstrap (reports drawn with replacement; the library's
  :func:`~medllama_fusion.metrics.bootstrap_auroc`, ``method="bootstrap"``).
* ``bca``: the same resamples, bias-corrected and accelerated; the acceleration from the
  leave-one-report-out jackknife.
* ``logit-delong``: DeLong placement values summed per report (Obuchowski 1997,
  :func:`~medllama_fusion.metrics.auroc_influence`), Wald interval on the logit scale;
  ``logit-delong-t`` the same with a Student-t quantile (Satterthwaite degrees of freedom).
* ``newcombe-wald``: Newcombe's (2006) modified Hanley-McNeil variance
  (:func:`~medllama_fusion.metrics.newcombe_variance`) at the estimate, times the design effect
  of the reports, plain Wald interval.
* ``newcombe-score``: the library's :func:`~medllama_fusion.metrics.auroc_intervals` (the same
  variance, inverted as a score interval; macro: logit Wald with the classes' DeLong
  correlations) and, for differences, :func:`~medllama_fusion.metrics.compare`.
* differences, ``delong``: the clustered DeLong variance of the difference, Wald interval.

Example (the numbers of ``docs/intervals.md``; about 45 min on one CPU thread)::

    OMP_NUM_THREADS=1 python benchmarks/interval_coverage.py \
        --json docs/benchmarks/interval_coverage.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import torch
from torch import Tensor

from medllama_fusion.metrics import (
    auroc_influence,
    auroc_intervals,
    bootstrap_weights,
    compare,
    markdown_table,
    newcombe_variance,
    placement_values,
    weighted_auroc,
)

NORMAL = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
POSITIVES = (5, 10, 20, 40)
MACRO_SHIFTS = (1.0, 1.5, 2.0, 2.5, 3.0)
REAL_POSITIVES = (66, 79, 6, 20, 15, 17, 26, 143, 273, 33, 25, 8, 5, 76)
REAL_REPORTS = 393
TABLES = ("per class", "per class, high AUROC", "macro", "paired difference")
INTERVAL_METHODS = (
    "percentile",
    "bca",
    "logit-delong",
    "logit-delong-t",
    "newcombe-wald",
    "newcombe-score",
)
DIFFERENCE_METHODS = ("percentile", "delong", "newcombe-score")
BOOTSTRAP = ("percentile", "bca")


# ---------------------------------------------------------------------------------------------
# simulated test sets
# ---------------------------------------------------------------------------------------------


@dataclass
class Sets:
    """``reps`` simulated test sets of ``classes`` classes, as the columns of one table.

    Attributes:
        scores: ``[N, reps * classes]``; column ``r * classes + c`` is class ``c`` of set ``r``.
            All sets share the row layout (``clusters``), nothing else.
        labels: ``[N, reps * classes]`` 0/1 labels.
        clusters: ``[N]`` report id ``0..G-1`` of every row.
        truth: ``[classes]`` population AUROC of each class.
        classes: Classes per set.
        other: Scores of a second model on the same sets (paired differences), or ``None``.
        other_truth: Its population AUROC per class.
    """

    scores: Tensor
    labels: Tensor
    clusters: Tensor
    truth: Tensor
    classes: int
    other: Tensor | None = None
    other_truth: Tensor | None = None

    @property
    def reps(self) -> int:
        """Number of sets."""
        return self.scores.shape[1] // self.classes

    def take(self, first: int, last: int) -> Sets:
        """Sets ``first..last-1`` only."""
        cols = slice(first * self.classes, last * self.classes)
        other = self.other[:, cols] if self.other is not None else None
        return Sets(
            self.scores[:, cols],
            self.labels[:, cols],
            self.clusters,
            self.truth,
            self.classes,
            other,
            self.other_truth,
        )


def _noise(gen: torch.Generator, reports: int, rows: int, rho: float, columns: int) -> Tensor:
    """Unit-variance noise ``[reports * rows, columns]``, correlation ``rho`` within a report."""
    if rows == 1:
        return torch.randn(reports, columns, generator=gen, dtype=torch.float64)
    shared = torch.randn(reports, 1, columns, generator=gen, dtype=torch.float64)
    own = torch.randn(reports, rows, columns, generator=gen, dtype=torch.float64)
    noise = math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own
    return noise.reshape(reports * rows, columns)


def simulate(
    gen: torch.Generator,
    reports: int,
    rows: int,
    rho: float,
    positives: Tensor,
    shifts: Tensor,
    reps: int,
    other_shifts: Tensor | None = None,
    model_rho: float = 0.6,
) -> Sets:
    """Draw ``reps`` test sets (see the module docstring).

    Args:
        gen: Random generator.
        reports: Reports per set.
        rows: Rows (images) per report, 1 or 2.
        rho: Correlation of the scores of two rows of one report.
        positives: ``[classes]`` positive reports of each class.
        shifts: ``[classes]`` binormal separation ``d`` of each class.
        reps: Number of sets.
        other_shifts: Separations of a second model scored on the same sets, or ``None``.
        model_rho: Correlation of the two models' noise.

    Returns:
        The sets.
    """
    classes = positives.numel()
    columns = reps * classes
    keys = torch.rand(reports, columns, generator=gen)
    ranks = keys.argsort(dim=0).argsort(dim=0)
    report_labels = (ranks < positives.repeat(reps)).double()  # exactly k positives per column
    labels = report_labels.repeat_interleave(rows, dim=0)
    noise = _noise(gen, reports, rows, rho, columns)
    scores = shifts.double().repeat(reps) * labels + noise
    clusters = torch.arange(reports).repeat_interleave(rows)
    truth = NORMAL.cdf(shifts.double() / math.sqrt(2.0))
    sets = Sets(scores, labels.long(), clusters, truth, classes)
    if other_shifts is not None:
        fresh = _noise(gen, reports, rows, rho, columns)
        other_noise = model_rho * noise + math.sqrt(1.0 - model_rho**2) * fresh
        sets.other = other_shifts.double().repeat(reps) * labels + other_noise
        sets.other_truth = NORMAL.cdf(other_shifts.double() / math.sqrt(2.0))
    return sets


# ---------------------------------------------------------------------------------------------
# interval methods: each returns per-class intervals [2, cols] and macro intervals [2, reps]
# ---------------------------------------------------------------------------------------------

Intervals = tuple[Tensor, Tensor | None]


def logit_wald(estimate: Tensor, variance: Tensor, z: float) -> Tensor:
    """Wald interval on the logit scale, ``[2, ...]``."""
    half = z * variance.sqrt() / (estimate * (1 - estimate))
    centre = torch.log(estimate) - torch.log1p(-estimate)
    return torch.stack([torch.sigmoid(centre - half), torch.sigmoid(centre + half)])


def _macro(values: Tensor, sets: Sets) -> Tensor:
    """Mean over the classes of each set: ``[..., reps * classes] -> [..., reps]``."""
    return values.view(*values.shape[:-1], sets.reps, sets.classes).mean(-1)


def logit_delong(sets: Sets, z: float) -> Intervals:
    inf = auroc_influence(sets.scores, sets.labels, sets.clusters)
    per_class = logit_wald(inf.auroc, inf.variance, z)
    if sets.classes == 1:
        return per_class, None
    macro_var = _macro(inf.influence, sets).pow(2).sum(0)
    return per_class, logit_wald(_macro(inf.auroc, sets), macro_var, z)


def logit_delong_t(sets: Sets, z: float) -> Intervals:
    """Logit DeLong with a Student-t quantile, Satterthwaite degrees of freedom (per class)."""
    from scipy.stats import t as student  # benchmark-only dependency

    y = sets.labels.double()
    inf = auroc_influence(sets.scores, sets.labels, sets.clusters)
    reports = int(sets.clusters.max()) + 1
    positive_report = torch.zeros(reports, y.shape[1], dtype=torch.float64)
    positive_report = positive_report.index_add(0, sets.clusters, y) > 0
    # labels are constant within a report here: a report's influence is all positive part or
    # all negative part
    v1 = inf.influence.where(positive_report, 0.0).pow(2).sum(0)
    v2 = inf.influence.where(~positive_report, 0.0).pow(2).sum(0)
    k1 = positive_report.sum(0).double()
    k2 = reports - k1
    df = (v1 + v2) ** 2 / (v1**2 / (k1 - 1) + v2**2 / (k2 - 1))
    level = float(NORMAL.cdf(torch.tensor(z, dtype=torch.float64)))
    q = torch.as_tensor(student.ppf(level, df.clamp(min=1).nan_to_num(1.0).numpy()))
    return logit_wald(inf.auroc, (v1 + v2) * (q / z) ** 2, z), None


def newcombe_wald(sets: Sets, z: float) -> Intervals:
    inf = auroc_influence(sets.scores, sets.labels, sets.clusters)
    variance = inf.design_effect() * newcombe_variance(inf.auroc, inf.positives, inf.negatives)
    half = z * variance.sqrt()
    return torch.stack([inf.auroc - half, inf.auroc + half]).clamp(0, 1), None


def newcombe_score(sets: Sets, z: float, confidence: float) -> Intervals:
    """The library's intervals: all columns at once per class, one call per set for the macro."""
    ci = auroc_intervals(sets.scores, sets.labels, sets.clusters, confidence, min_positives=1)
    if sets.classes == 1:
        return ci.class_ci, None
    macro = torch.stack(
        [
            auroc_intervals(
                part.scores, part.labels, part.clusters, confidence, min_positives=1
            ).mean_ci
            for part in (sets.take(r, r + 1) for r in range(sets.reps))
        ],
        dim=1,
    )
    return ci.class_ci, macro


def column_quantiles(values: Tensor, probs: Tensor) -> Tensor:
    """Linear-interpolation quantile of each column at its own probabilities, ignoring NaN.

    Args:
        values: ``[B, cols]``.
        probs: ``[k, cols]``.

    Returns:
        ``[k, cols]``.
    """
    ordered = values.sort(dim=0).values  # NaN sort last
    count = (~values.isnan()).sum(0).double()
    pos = probs.clamp(0, 1) * (count - 1).clamp(min=0)
    low, high = pos.floor().long(), pos.ceil().long()
    below, above = ordered.gather(0, low), ordered.gather(0, high)
    return below + (pos - low) * (above - below)


def jackknife(scores: Tensor, labels: Tensor, clusters: Tensor) -> Tensor:
    """Leave-one-report-out AUROC ``[G, cols]`` (labels constant within a report, as here)."""
    inf_values = placement_values(scores, labels)
    y = labels.double()
    n_pos, n_neg = y.sum(0), (1 - y).sum(0)
    auc = (inf_values * y).sum(0) / n_pos
    reports = int(clusters.max()) + 1
    zeros = torch.zeros(reports, y.shape[1], dtype=torch.float64)
    pos_rows = zeros.index_add(0, clusters, y)
    neg_rows = zeros.index_add(0, clusters, 1 - y)
    wins = zeros.index_add(0, clusters, inf_values * y) * n_neg
    wins += zeros.index_add(0, clusters, inf_values * (1 - y)) * n_pos
    return (n_pos * n_neg * auc - wins) / ((n_pos - pos_rows) * (n_neg - neg_rows))


def bootstrap(
    sets: Sets, z: float, resamples: int, seed: int, block: int = 100, chunk: int = 20
) -> tuple[Intervals, Intervals, Intervals]:
    """Percentile and BCa intervals from the same cluster resamples (fresh ones per block of sets).

    Returns:
        Percentile intervals, BCa intervals and, for paired sets, the percentile intervals of
        the difference (per class and macro; ``None`` otherwise).
    """
    alpha = NORMAL.cdf(torch.tensor(-z, dtype=torch.float64))
    parts: dict[str, list[Tensor]] = {k: [] for k in ("pc", "pm", "bc", "bm", "dc", "dm")}
    reports = int(sets.clusters.max()) + 1
    for b, first in enumerate(range(0, sets.reps, block)):
        part = sets.take(first, min(first + block, sets.reps))
        counts = bootstrap_weights(torch.arange(reports), resamples, seed + b)
        weights = counts[:, part.clusters]

        def stars(scores: Tensor, labels: Tensor = part.labels, w: Tensor = weights) -> Tensor:
            return torch.cat(
                [weighted_auroc(scores, labels, w[i : i + chunk]) for i in range(0, len(w), chunk)]
            )

        star = stars(part.scores)
        full = weighted_auroc(part.scores, part.labels, torch.ones(1, len(part.clusters)))[0]
        jack = jackknife(part.scores, part.labels, part.clusters)
        targets = [("c", star, jack, full)]
        if part.classes > 1:
            targets.append(("m", *(_macro(x, part) for x in (star, jack, full))))
        for kind, boot, jk, est in targets:
            q = torch.stack([alpha, 1 - alpha])[:, None].expand(2, est.numel())
            parts["p" + kind].append(column_quantiles(boot, q))
            valid = (~boot.isnan()).sum(0).double()
            share = ((boot < est).double().sum(0) + 0.5 * (boot == est).double().sum(0)) / valid
            z0 = NORMAL.icdf(share.clamp(0.5 / resamples, 1 - 0.5 / resamples))
            dev = jk.nanmean(0) - jk
            acc = ((dev**3).nansum(0) / (6 * (dev**2).nansum(0) ** 1.5)).nan_to_num()
            zs = torch.tensor([-z, z], dtype=torch.float64)[:, None]
            parts["b" + kind].append(
                column_quantiles(boot, NORMAL.cdf(z0 + (z0 + zs) / (1 - acc * (z0 + zs))))
            )
        if part.other is not None:
            diff = star - stars(part.other)
            q = torch.stack([alpha, 1 - alpha])[:, None]
            parts["dc"].append(column_quantiles(diff, q.expand(2, diff.shape[1])))
            if part.classes > 1:
                macro = _macro(diff, part)
                parts["dm"].append(column_quantiles(macro, q.expand(2, macro.shape[1])))
    cat = {k: torch.cat(v, dim=1) if v else None for k, v in parts.items()}
    percentile = (cat["pc"], cat["pm"])
    bca = (cat["bc"], cat["bm"])
    assert percentile[0] is not None and bca[0] is not None
    return percentile, bca, (cat["dc"], cat["dm"])  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# paired differences
# ---------------------------------------------------------------------------------------------


def delong_difference(sets: Sets, z: float) -> Intervals:
    assert sets.other is not None
    a = auroc_influence(sets.scores, sets.labels, sets.clusters)
    b = auroc_influence(sets.other, sets.labels, sets.clusters)
    diff = a.auroc - b.auroc
    half = z * (a.influence - b.influence).pow(2).sum(0).sqrt()
    per_class = torch.stack([diff - half, diff + half])
    if sets.classes == 1:
        return per_class, None
    macro_half = z * _macro(a.influence - b.influence, sets).pow(2).sum(0).sqrt()
    macro = _macro(diff, sets)
    return per_class, torch.stack([macro - macro_half, macro + macro_half])


def newcombe_difference(sets: Sets, z: float, confidence: float) -> Intervals:
    """The library's :func:`compare`: all columns at once per class, one call per set (macro)."""
    assert sets.other is not None
    result = compare(sets.scores, sets.other, sets.labels, sets.clusters, None, confidence, 1)
    per_class = torch.tensor([result.ci_low, result.ci_high], dtype=torch.float64)
    if sets.classes == 1:
        return per_class, None
    macro = []
    for r in range(sets.reps):
        part = sets.take(r, r + 1)
        assert part.other is not None
        one = compare(part.scores, part.other, part.labels, part.clusters, None, confidence, 1)
        macro.append(torch.tensor(one.mean_ci, dtype=torch.float64))
    return per_class, torch.stack(macro, dim=1)


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------


def coverage(interval: Tensor, truth: Tensor) -> tuple[float, float]:
    hit = ((interval[0] <= truth) & (truth <= interval[1])).double()
    p = float(hit.mean())
    return p, math.sqrt(p * (1 - p) / hit.numel())


def misses(interval: Tensor, truth: Tensor) -> dict[str, float]:
    """Shares of sets whose interval lies above the truth (``low``) or below it (``high``)."""
    return {
        "miss_low": float((interval[0] > truth).double().mean()),
        "miss_high": float((interval[1] < truth).double().mean()),
    }


def summarise(
    per_class: Tensor, macro: Tensor | None, sets: Sets, seconds: float
) -> dict[str, Any]:
    truth = sets.truth if sets.other_truth is None else sets.truth - sets.other_truth
    row: dict[str, Any] = {"seconds": round(seconds, 2), "sets": sets.reps}
    if sets.classes == 1:
        row["coverage"], row["mc_se"] = coverage(per_class, truth.repeat(sets.reps))
        row["width"] = float((per_class[1] - per_class[0]).nanmean())
        row.update(misses(per_class, truth.repeat(sets.reps)))
    elif macro is None:
        row.update(coverage=math.nan, mc_se=math.nan, width=math.nan)
    else:
        row["coverage"], row["mc_se"] = coverage(macro, truth.mean())
        row["width"] = float((macro[1] - macro[0]).nanmean())
        row.update(misses(macro, truth.mean()))
        row["per_class_coverage"] = coverage(per_class, truth.repeat(sets.reps))[0]
    return row


METHODS: dict[str, Callable[..., Intervals]] = {
    "logit-delong": logit_delong,
    "logit-delong-t": logit_delong_t,
    "newcombe-wald": newcombe_wald,
}


def run_setting(sets: Sets, args: argparse.Namespace, z: float, seed: int) -> dict[str, Any]:
    """Every method on one setting's sets (the bootstrap on the first ``--boot-reps`` only)."""
    results: dict[str, Any] = {}
    paired = sets.other is not None
    methods = DIFFERENCE_METHODS if paired else INTERVAL_METHODS
    chosen = [m for m in methods if m in args.methods]
    if any(m in BOOTSTRAP for m in chosen):
        limit = args.boot_reps if sets.classes == 1 else args.macro_boot_reps
        part = sets.take(0, min(limit, sets.reps))
        start = time.perf_counter()
        percentile, bca, difference = bootstrap(part, z, args.resamples, seed)
        seconds = time.perf_counter() - start
        if paired:
            assert difference[0] is not None
            results["percentile"] = summarise(*difference, part, seconds)
        else:
            results["percentile"] = summarise(*percentile, part, seconds)
            results["bca"] = summarise(*bca, part, seconds)
    for method in chosen:
        if method in BOOTSTRAP:
            continue
        start = time.perf_counter()
        if method == "newcombe-score":
            fn = newcombe_difference if paired else newcombe_score
            per_class, macro = fn(sets, z, args.confidence)
        elif paired:
            per_class, macro = delong_difference(sets, z)
        else:
            per_class, macro = METHODS[method](sets, z)
        results[method] = summarise(per_class, macro, sets, time.perf_counter() - start)
    return results


def settings(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (table, rows per report, positives) setting of the study."""
    out: list[dict[str, Any]] = []
    scale = {"per class": [args.shift], "per class, high AUROC": [args.high_shift]}
    for table in args.tables:
        for rows in (1, 2):
            for k in args.positives:
                if table == "paired difference":
                    for name, drop in (("null", 0.0), ("A better", 0.5)):
                        for shifts in ([args.shift], list(MACRO_SHIFTS)):
                            d = torch.tensor(shifts, dtype=torch.float64)
                            out.append(
                                {
                                    "table": table,
                                    "kind": ("per class" if len(shifts) == 1 else "macro")
                                    + f", {name}",
                                    "rows": rows,
                                    "positives": k,
                                    "p": torch.full((len(shifts),), k),
                                    "d": d,
                                    "other": d - drop,
                                }
                            )
                    continue
                shifts = scale.get(table, list(MACRO_SHIFTS))
                out.append(
                    {
                        "table": table,
                        "kind": table,
                        "rows": rows,
                        "positives": k,
                        "p": torch.full((len(shifts),), k),
                        "d": torch.tensor(shifts, dtype=torch.float64),
                        "other": None,
                    }
                )
            if table == "macro" and args.real_mix:
                scaled = [max(1, round(p * args.reports / REAL_REPORTS)) for p in REAL_POSITIVES]
                shifts = [MACRO_SHIFTS[i % len(MACRO_SHIFTS)] for i in range(len(scaled))]
                for minimum in args.real_min:
                    keep = [i for i, p in enumerate(scaled) if p >= minimum]
                    out.append(
                        {
                            "table": table,
                            "kind": table,
                            "rows": rows,
                            "positives": f"real mix, classes >= {minimum}",
                            "p": torch.tensor([scaled[i] for i in keep]),
                            "d": torch.tensor([shifts[i] for i in keep], dtype=torch.float64),
                            "other": None,
                        }
                    )
    return out


def study(args: argparse.Namespace) -> dict[str, Any]:
    z = float(NORMAL.icdf(torch.tensor(0.5 + args.confidence / 2, dtype=torch.float64)))
    gen = torch.Generator().manual_seed(args.seed)
    out = []
    for i, setting in enumerate(settings(args)):
        reps = args.reps if setting["p"].numel() == 1 else args.macro_reps
        sets = simulate(
            gen,
            args.reports,
            setting["rows"],
            args.rho,
            setting["p"],
            setting["d"],
            reps,
            setting["other"],
            args.model_rho,
        )
        result = run_setting(sets, args, z, args.seed + 1000 * (i + 1))
        truth = sets.truth if sets.other_truth is None else sets.truth - sets.other_truth
        out.append(
            {
                "table": setting["table"],
                "kind": setting["kind"],
                "rows_per_report": setting["rows"],
                "positives": setting["positives"],
                "classes": int(sets.classes),
                "truth": [round(float(t), 4) for t in truth],
                "methods": result,
            }
        )
        summary = ", ".join(f"{m} {r['coverage']:.3f}" for m, r in result.items())
        print(f"{setting['kind']} rows={setting['rows']} k={setting['positives']}: {summary}")
        sys.stdout.flush()
    return {
        "env": {
            "date": date.today().isoformat(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "settings": out,
    }


def markdown(result: dict[str, Any]) -> str:
    """The coverage tables (one per kind) as Markdown, coverage ± Monte-Carlo SE in %."""
    args = result["args"]
    parts = []
    kinds = dict.fromkeys(e["kind"] for e in result["settings"])
    for kind in kinds:
        entries = [e for e in result["settings"] if e["kind"] == kind]
        methods = list(entries[0]["methods"])
        rows = []
        for e in entries:
            cells: list[Any] = [
                "1" if e["rows_per_report"] == 1 else f"2 (rho {args['rho']})",
                e["positives"],
            ]
            for m in methods:
                r = e["methods"][m]
                cells.append(
                    "n/a"
                    if math.isnan(r["coverage"])
                    else f"{100 * r['coverage']:.1f} ± {100 * r['mc_se']:.1f}"
                )
            rows.append(cells)
        sets = {m: entries[0]["methods"][m]["sets"] for m in methods}
        header = ["rows per report", "positive reports", *(f"{m} ({sets[m]})" for m in methods)]
        truth = ", ".join(f"{t:.3f}" for t in entries[0]["truth"])
        what = "true difference" if entries[0]["table"] == "paired difference" else "true AUROC"
        parts.append(f"**{kind}** ({what} {truth})\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=4000, help="sets per per-class setting")
    parser.add_argument("--macro-reps", type=int, default=1000, help="sets per macro setting")
    parser.add_argument(
        "--boot-reps", type=int, default=1000, help="sets per setting for the bootstrap methods"
    )
    parser.add_argument(
        "--macro-boot-reps", type=int, default=400, help="sets per macro setting, bootstrap"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--reports", type=int, default=377)
    parser.add_argument("--rho", type=float, default=0.7, help="score correlation in a report")
    parser.add_argument("--model-rho", type=float, default=0.6, help="noise correlation, A vs B")
    parser.add_argument("--shift", type=float, default=1.5)
    parser.add_argument("--high-shift", type=float, default=2.5)
    parser.add_argument("--positives", type=int, nargs="+", default=list(POSITIVES))
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--real-mix", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--real-min", type=int, nargs="+", default=[5, 10])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(dict.fromkeys(INTERVAL_METHODS + DIFFERENCE_METHODS)),
        choices=list(dict.fromkeys(INTERVAL_METHODS + DIFFERENCE_METHODS)),
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--markdown", default=None, help="write the tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = study(args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = markdown(result)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
