"""Placement values, the clustered DeLong decomposition and the Newcombe score intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medllama_fusion.metrics import (
    DEFAULT_MIN_POSITIVES,
    auroc_influence,
    auroc_intervals,
    auroc_report,
    bootstrap_auroc,
    ci_classes,
    format_markdown_table,
    newcombe_variance,
    per_class_auroc,
    placement_values,
)


def _psi(x: float, y: float) -> float:
    return float(x > y) + 0.5 * float(x == y)


def test_placement_values_count_pairs_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 5, (40, 3), generator=g).double()  # many ties
    target = torch.randint(0, 2, (40, 3), generator=g)
    values = placement_values(preds, target)
    for c in range(3):
        pos = preds[target[:, c] == 1, c].tolist()
        neg = preds[target[:, c] == 0, c].tolist()
        for i in range(40):
            s = float(preds[i, c])
            if target[i, c] == 1:
                expected = sum(_psi(s, n) for n in neg) / len(neg)
            else:
                expected = sum(_psi(p, s) for p in pos) / len(pos)
            assert float(values[i, c]) == pytest.approx(expected)
    assert torch.isnan(placement_values(preds, torch.zeros_like(target))).all()


def test_influence_is_delong_without_groups() -> None:
    """One row per report: the variance is DeLong et al.'s S10 / m + S01 / n."""
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(80, 2, generator=g) < 0.3).long()
    preds = target * 1.2 + torch.randn(80, 2, generator=g, dtype=torch.float64)
    inf = auroc_influence(preds, target)
    values = placement_values(preds, target)
    assert torch.allclose(inf.auroc, per_class_auroc(preds, target).double())
    for c in range(2):
        pos, neg = target[:, c] == 1, target[:, c] == 0
        s10, s01 = values[pos, c].var(), values[neg, c].var()
        delong = s10 / pos.sum() + s01 / neg.sum()
        assert float(inf.variance[c]) == pytest.approx(float(delong), rel=1e-12)
        assert float(inf.row_variance[c]) == pytest.approx(float(delong), rel=1e-12)
    assert torch.allclose(inf.design_effect(), torch.ones(2, dtype=torch.float64))
    assert inf.num_clusters == 80


def _obuchowski(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Obuchowski (1997) by hand, its cross term with sqrt(K1 K2 / ((K1-1)(K2-1)))."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    theta = np.mean([_psi(p, q) for p in pos for q in neg])
    ids = np.unique(groups)

    def cluster_sums(label: int) -> np.ndarray:
        """Per report, the placement values of its rows of ``label``, summed."""
        sums = []
        for k in ids:
            rows = scores[(groups == k) & (labels == label)]
            if label == 1:
                sums.append(sum(np.mean([_psi(s, q) for q in neg]) for s in rows))
            else:
                sums.append(sum(np.mean([_psi(p, s) for p in pos]) for s in rows))
        return np.array(sums, dtype=float)

    x, y = cluster_sums(1), cluster_sums(0)
    mk = np.array([((groups == k) & (labels == 1)).sum() for k in ids])
    nk = np.array([((groups == k) & (labels == 0)).sum() for k in ids])
    k1, k2 = (mk > 0).sum(), (nk > 0).sum()
    a, b = (x - mk * theta) / m, (y - nk * theta) / n
    cross = math.sqrt(k1 * k2 / ((k1 - 1) * (k2 - 1)))
    return k1 / (k1 - 1) * (a**2).sum() + k2 / (k2 - 1) * (b**2).sum() + 2 * cross * (a * b).sum()


def test_influence_aggregates_placement_values_per_report() -> None:
    """Reports of 1-3 rows with mixed labels: Obuchowski's clustered variance."""
    g = torch.Generator().manual_seed(2)
    groups = torch.tensor([i // 3 if i < 30 else 10 + (i - 30) // 2 for i in range(50)])
    target = (torch.rand(50, 1, generator=g) < 0.4).long()
    preds = target * 1.0 + torch.randn(50, 1, generator=g, dtype=torch.float64)
    inf = auroc_influence(preds, target, groups * 7 + 3)  # any integer ids
    expected = _obuchowski(preds[:, 0].numpy(), target[:, 0].numpy(), groups.numpy())
    assert float(inf.variance[0]) == pytest.approx(expected, rel=1e-10)
    assert inf.num_clusters == 20
    assert torch.allclose(inf.influence, inf.positive_part + inf.negative_part)
    assert int(inf.positive_groups[0]) == int(torch.unique(groups[target[:, 0] == 1]).numel())


def test_design_effect_of_duplicated_rows() -> None:
    """Every row twice in its report: the clustered variance is about twice the naive one."""
    g = torch.Generator().manual_seed(3)
    target = (torch.rand(200, 1, generator=g) < 0.2).long()
    preds = target * 1.5 + torch.randn(200, 1, generator=g, dtype=torch.float64)
    twice_preds, twice_target = preds.repeat_interleave(2, 0), target.repeat_interleave(2, 0)
    groups = torch.arange(200).repeat_interleave(2)
    effect = auroc_influence(twice_preds, twice_target, groups).design_effect()
    assert 1.9 < float(effect[0]) < 2.1
    # perfect separation: no DeLong variance, the rows per report stand in
    perfect = auroc_influence(twice_target.double(), twice_target, groups)
    assert float(perfect.variance[0]) == 0.0 and float(perfect.design_effect()[0]) == 2.0


def test_newcombe_variance_formula() -> None:
    theta, m, n = 0.8, 10, 90
    star = (m + n) / 2 - 1
    expected = theta * (1 - theta) * (1 + star * (0.2 / 1.2 + 0.8 / 1.8)) / (m * n)
    got = newcombe_variance(torch.tensor(theta), torch.tensor(m), torch.tensor(n))
    assert float(got) == pytest.approx(expected)
    assert float(newcombe_variance(torch.tensor(1.0), torch.tensor(m), torch.tensor(n))) == 0.0


def test_score_interval_solves_its_equation() -> None:
    g = torch.Generator().manual_seed(4)
    target = torch.zeros(300, 3, dtype=torch.long)
    target[:6, 0] = 1
    target[:30, 1] = 1
    target[:12, 2] = 1
    preds = target * torch.tensor([0.6, 0.6, 9.0]) + torch.rand(300, 3, generator=g)
    ci = auroc_intervals(preds, target)
    auc = per_class_auroc(preds, target).double()
    assert bool(ci.classes.all()) and ci.num_clusters == 300
    z = 1.959963984540054
    assert torch.allclose(ci.auroc, auc, atol=1e-6)
    assert torch.allclose(ci.design_effect, torch.ones(3, dtype=torch.float64), atol=1e-12)
    for c in range(3):
        low, high = ci.class_ci[:, c].tolist()
        estimate, m = float(ci.auroc[c]), target[:, c].sum()
        assert low < estimate < high < 1.0 if c < 2 else low < estimate == high == 1.0
        for bound in (low, high):
            v = newcombe_variance(torch.tensor(bound, dtype=torch.float64), m, 300 - m)
            assert (estimate - bound) ** 2 == pytest.approx(z**2 * float(v), rel=1e-9)
    # class 2 is perfectly separated: the interval reaches 1 but is not empty
    assert float(auc[2]) == 1.0 and ci.class_ci[1, 2] == 1.0 and ci.class_ci[0, 2] < 0.95
    assert ci.class_ci[0, 0] < ci.class_ci[0, 1]  # 6 positives: wider than 30
    assert ci.mean_ci[0] < ci.mean < ci.mean_ci[1]
    assert ci.mean == pytest.approx(float(auc.mean()))
    wider = auroc_intervals(preds, target, confidence=0.99)
    assert (wider.class_ci[0] < ci.class_ci[0]).all() and wider.mean_ci[0] < ci.mean_ci[0]


def test_fixed_set_counts_reports_when_grouped() -> None:
    target = torch.zeros(60, 2, dtype=torch.long)
    target[:8, 0] = 1  # 8 positive rows in 4 reports of two rows
    target[8:13, 1] = 1  # 5 positive rows, one report each
    groups = torch.cat([torch.arange(4).repeat_interleave(2), torch.arange(4, 56)])
    assert ci_classes(target, 5).tolist() == [True, True]  # rows
    assert ci_classes(target, 5, groups).tolist() == [False, True]  # reports
    assert DEFAULT_MIN_POSITIVES == 5
    preds = target + torch.rand(60, 2, generator=torch.Generator().manual_seed(5))
    report = auroc_report(preds, target, ["a", "b"], groups=groups)
    assert report.in_mean == [False, True] and report.counts == "reports"
    assert report.notes[0] == "fewer than 5 positive or negative reports: no CI, not in mean"
    assert math.isnan(report.ci_low[0]) and not math.isnan(report.ci_low[1])
    table = format_markdown_table(report)
    assert "macro mean over the 1 classes with >= 5 positive and negative reports" in table
    assert "Newcombe intervals over 56 report groups" in table
    # the bootstrap, kept as an option, counts rows as it always did
    boot = auroc_report(preds, target, ["a", "b"], groups=groups, method="bootstrap")
    assert boot.in_mean == [True, True] and boot.counts == "rows"
    assert "bootstrap over 56 report groups" in format_markdown_table(boot)


def test_report_method_choice() -> None:
    g = torch.Generator().manual_seed(6)
    target = (torch.rand(120, 2, generator=g) < 0.3).long()
    preds = target * 1.0 + torch.rand(120, 2, generator=g)
    report = auroc_report(preds, target, ["a", "b"])
    assert report.method == "newcombe" and report.dropped_resamples == 0
    ci = auroc_intervals(preds, target)
    assert report.ci_low == ci.class_ci[0].tolist() and report.mean_ci == tuple(ci.mean_ci.tolist())
    boot = auroc_report(preds, target, ["a", "b"], num_resamples=200, seed=3, method="bootstrap")
    reference = bootstrap_auroc(preds, target, num_resamples=200, seed=3)
    assert boot.ci_low == reference.class_ci[0].tolist()
    assert boot.mean_ci == tuple(reference.mean_ci.tolist())
    off = auroc_report(preds, target, ["a", "b"], num_resamples=0)
    assert math.isnan(off.ci_low[0]) and off.num_clusters == 0
    with pytest.raises(ValueError, match="method"):
        auroc_report(preds, target, ["a", "b"], method="delong")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        auroc_intervals(preds, target, confidence=0.0)
