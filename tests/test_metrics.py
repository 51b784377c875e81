import math
import warnings

import numpy as np
import pytest
import torch

from medllama_fusion.metrics import (
    DEFAULT_MIN_POSITIVES,
    DefinedMultilabelAUROC,
    auroc_report,
    bootstrap_auroc,
    bootstrap_weights,
    ci_classes,
    deduplicate,
    format_markdown_table,
    markdown_table,
    per_class_auroc,
    weighted_auroc,
)

PREDS = torch.tensor([[0.9, 0.2, 0.5], [0.4, 0.8, 0.1], [0.6, 0.3, 0.7], [0.1, 0.3, 0.2]])
TARGET = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])


def pair_count_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC by counting concordant pairs (ties count 1/2)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_per_class_auroc_matches_hand_counts_and_the_metric() -> None:
    # class 0: positives 0.9, 0.6 vs negatives 0.4, 0.1 -> 4/4 concordant = 1.0
    # class 1: positives 0.8, 0.3 vs negatives 0.2, 0.3 -> (1 + 1) + (1 + 0.5) = 3.5/4
    auc = per_class_auroc(PREDS, TARGET)
    assert auc[0].item() == pytest.approx(1.0)
    assert auc[1].item() == pytest.approx(3.5 / 4)
    assert math.isnan(auc[2].item())  # no positives
    metric = DefinedMultilabelAUROC(3, ["a", "b", "c"])
    metric.update(PREDS, TARGET)
    with pytest.warns(UserWarning, match=r"undefined.*\['c'\]"):
        tm = metric.compute()
    assert torch.allclose(tm[:2].double(), auc[:2].double())
    assert math.isnan(tm[2].item())
    # the bootstrap's weighted formula with unit weights is the same AUROC
    unit = weighted_auroc(PREDS, TARGET, torch.ones(1, 4))[0]
    assert torch.allclose(unit[:2], auc[:2].double()) and math.isnan(unit[2].item())


def test_random_against_pair_counting() -> None:
    g = torch.Generator().manual_seed(3)
    preds = torch.randint(0, 5, (30, 4), generator=g).float() / 4  # many ties
    target = torch.randint(0, 2, (30, 4), generator=g)
    auc = per_class_auroc(preds, target)
    unit = weighted_auroc(preds, target, torch.ones(1, 30))[0]
    for c in range(4):
        ref = pair_count_auroc(preds[:, c].numpy(), target[:, c].numpy())
        assert auc[c].item() == pytest.approx(ref)
        assert unit[c].item() == pytest.approx(ref)


def test_markdown_table_plain_and_aligned() -> None:
    rows = [["a", 1, ""], ["bb|c", 22, "note"]]
    assert markdown_table(["name", "n", "note"], rows) == (
        "| name | n | note |\n|---|---|---|\n| a | 1 |  |\n| bb\\|c | 22 | note |"
    )
    aligned = markdown_table(["name", "n"], [["a", 1], ["bb", 22]], ["left", "right"])
    assert aligned.splitlines() == [
        "| name |  n |",
        "|------|---:|",
        "| a    |  1 |",
        "| bb   | 22 |",
    ]
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["name", "n"], [["a"]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["name", "n"], [], ["left"])


def test_weighted_auroc_equals_auroc_of_repeated_rows() -> None:
    """Integer weights = the data set with each row repeated that often (ties included)."""
    g = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 6, (40, 3), generator=g).float() / 5
    target = torch.randint(0, 2, (40, 3), generator=g)
    weights = torch.randint(0, 4, (5, 40), generator=g)
    got = weighted_auroc(preds, target, weights)
    for r in range(5):
        rows = torch.repeat_interleave(torch.arange(40), weights[r])
        for c in range(3):
            ref = pair_count_auroc(preds[rows, c].numpy(), target[rows, c].numpy())
            assert got[r, c].item() == pytest.approx(ref, abs=1e-12)
    assert torch.isnan(weighted_auroc(preds, target, torch.zeros(1, 40))).all()


def test_cluster_weights_draw_whole_clusters() -> None:
    clusters = torch.tensor([0, 0, 1, 2, 2, 2])
    w = bootstrap_weights(clusters, num_resamples=50, seed=4)
    assert w.shape == (50, 6)
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 3], w[:, 5])
    assert torch.equal(w[:, [0, 2, 3]].sum(1), torch.full((50,), 3.0))  # G clusters drawn
    assert torch.equal(w, bootstrap_weights(clusters, 50, seed=4))
    assert not torch.equal(w, bootstrap_weights(clusters, 50, seed=5))


def _binormal_clustered(
    gen: torch.Generator, clusters: int, shifts: torch.Tensor, prevalence: float, rho: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows per cluster sharing labels and a N(0, rho) score component.

    Marginally negatives score N(0, 1) and positives N(d, 1): population AUROC Phi(d / sqrt 2).
    """
    c = shifts.numel()
    labels = (torch.rand(clusters, c, generator=gen) < prevalence).double()
    shared = torch.randn(clusters, c, generator=gen, dtype=torch.float64)
    rows = []
    for _ in range(2):
        own = torch.randn(clusters, c, generator=gen, dtype=torch.float64)
        rows.append(shifts * labels + math.sqrt(rho) * shared + math.sqrt(1 - rho) * own)
    scores = torch.stack(rows, 1).reshape(2 * clusters, c)
    return scores, labels.repeat_interleave(2, dim=0).long()


def _coverage(groups_on: bool, repetitions: int = 200) -> tuple[np.ndarray, float]:
    shifts = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    true = torch.distributions.Normal(0.0, 1.0).cdf(shifts / math.sqrt(2.0))
    gen = torch.Generator().manual_seed(2024)
    clusters = 150
    groups = torch.arange(clusters).repeat_interleave(2)
    hits = np.zeros(3)
    mean_hits = 0
    for rep in range(repetitions):
        scores, labels = _binormal_clustered(gen, clusters, shifts, 0.3, rho=0.7)
        ci = bootstrap_auroc(
            scores,
            labels,
            groups if groups_on else None,
            num_resamples=200,
            seed=rep,
            min_positives=DEFAULT_MIN_POSITIVES,
        )
        assert bool(ci.classes.all())
        low, high = ci.class_ci
        hits += ((low <= true) & (true <= high)).numpy()
        mean_hits += int(ci.mean_ci[0] <= true.mean() <= ci.mean_ci[1])
    return hits / repetitions, mean_hits / repetitions


def test_cluster_bootstrap_coverage_simulation() -> None:
    """95 % intervals cover the known population AUROC in 90-99 % of 200 simulated data sets."""
    per_class, mean = _coverage(groups_on=True)
    assert ((per_class >= 0.90) & (per_class <= 0.99)).all(), per_class
    assert 0.90 <= mean <= 0.99, mean
    # the same data resampled row by row ignores the within-report correlation: too narrow
    _, row_mean = _coverage(groups_on=False)
    assert row_mean < 0.90, row_mean


def test_fixed_class_set_and_rare_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 60
    target = torch.zeros(n, 3, dtype=torch.long)
    target[:30, 0] = 1
    target[::2, 1] = 1
    target[:4, 2] = 1  # 4 positives: AUROC defined, no interval, not in the mean
    preds = target.double() * 0.5 + torch.rand(n, 3, generator=gen, dtype=torch.float64)
    assert ci_classes(target).tolist() == [True, True, False]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = auroc_report(preds, target, ["a", "b", "c"], num_resamples=100)
    assert report.in_mean == [True, True, False]
    assert report.mean == pytest.approx((report.auroc[0] + report.auroc[1]) / 2)
    assert not math.isnan(report.auroc[2]) and math.isnan(report.ci_low[2])
    assert f"fewer than {DEFAULT_MIN_POSITIVES}" in report.notes[2]
    assert "not in mean" in report.notes[2]
    assert report.ci_low[0] < report.auroc[0] < report.ci_high[0]
    assert report.mean_ci[0] < report.mean < report.mean_ci[1]
    assert report.num_clusters == n
    table = format_markdown_table(report)
    assert "| c |" in table and "n/a" in table and "| mean |" in table
    assert "macro mean over the 2 classes" in table

    # each resample averages exactly the fixed set: the macro CI is the quantile of the mean of
    # the fixed classes' resampled AUROCs, never a mean over whatever is defined
    ci = bootstrap_auroc(preds, target, num_resamples=100, seed=0)
    w = bootstrap_weights(torch.arange(n), 100, seed=0)
    aucs = weighted_auroc(preds, target, w)[:, :2].mean(1)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    assert torch.allclose(ci.mean_ci, torch.quantile(aucs, q))

    # a class whose positives all sit in one report group: the macro interval drops resamples
    # that miss it instead of averaging fewer classes
    groups = torch.arange(n)
    groups[:4] = 0
    ci = bootstrap_auroc(preds, target, groups, num_resamples=200, seed=1, min_positives=4)
    assert bool(ci.classes[2]) and ci.dropped_resamples > 0 and ci.num_clusters == n - 3

    target[:, 2] = 0
    report = auroc_report(preds, target, ["a", "b", "c"], num_resamples=0, min_positives=1)
    assert math.isnan(report.auroc[2]) and report.notes[2] == "undefined: no positives"
    assert report.mean == pytest.approx((report.auroc[0] + report.auroc[1]) / 2)


def test_metric_deduplicates_padded_rows_and_orders_by_index() -> None:
    """Rows repeated by a distributed sampler count once; order does not change anything."""
    gen = torch.Generator().manual_seed(0)
    n = 23
    preds = torch.rand(n, 3, generator=gen)
    target = torch.randint(0, 2, (n, 3), generator=gen)
    index = torch.arange(n)
    groups = index // 2
    loss = torch.rand(n, generator=gen)
    single = DefinedMultilabelAUROC(3)
    single.update(preds, target, index, groups, loss)
    expected = single.compute()
    # two "ranks": strided shards, the shorter padded with the first rows, concatenated
    shard0 = torch.arange(0, n, 2)
    shard1 = torch.cat([torch.arange(1, n, 2), torch.tensor([0])])
    padded = DefinedMultilabelAUROC(3)
    for rows in (shard0, shard1):
        padded.update(preds[rows], target[rows], index[rows], groups[rows], loss[rows])
    got = padded.compute()
    assert torch.equal(got, expected)
    assert torch.equal(padded.gathered_index, index)
    assert torch.equal(padded.gathered_preds, preds)
    assert torch.equal(padded.gathered_groups, groups)
    assert padded.gathered_loss == pytest.approx(float(loss.double().mean()))
    assert deduplicate(torch.tensor([3, 1, 3, 0, 1])).tolist() == [3, 1, 0]

    plain = DefinedMultilabelAUROC(3)  # no index: no de-duplication, rows as they came
    plain.update(preds, target)
    assert torch.equal(plain.compute(), expected)
    assert plain.gathered_index is None and plain.gathered_groups is None


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="label_names"):
        auroc_report(PREDS, TARGET, ["a"])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auroc(PREDS, TARGET, confidence=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_auroc(PREDS, TARGET, groups=torch.zeros(3))
    with pytest.raises(ValueError, match="min_positives"):
        ci_classes(TARGET, 0)


def test_report_also_gives_the_mean_over_every_defined_class() -> None:
    from medllama_fusion.metrics import auroc_report

    generator = torch.Generator().manual_seed(0)
    target = torch.zeros(40, 3, dtype=torch.long)
    target[:20, 0] = 1  # 20 positives: in the fixed set
    target[:3, 1] = 1  # 3 positives: defined, but below min_positives
    preds = torch.rand(40, 3, generator=generator)
    report = auroc_report(preds, target, ["a", "b", "c"], num_resamples=0, min_positives=10)
    assert report.in_mean == [True, False, False]
    assert report.mean == pytest.approx(report.auroc[0])
    assert report.mean_all_defined == pytest.approx((report.auroc[0] + report.auroc[1]) / 2)
    assert [row["label"] for row in report.rows()][-2:] == ["mean", "mean (all defined)"]
