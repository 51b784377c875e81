"""Every number and figure of the evaluation: AUROC with intervals, thresholds, calibration.

The functions here are pure (tensors in, tensors, tables or figures out); the
:class:`~medllama_fusion.trainers.FusionClassifier` and the
:class:`~medllama_fusion.trainers.OperatingPoints` callback only call them, then log and write
the results.

- **AUROC.** Per-class AUROC comes from torchmetrics (:func:`per_class_auroc`, and
  :class:`DefinedMultilabelAUROC`, which accumulates on device and gathers across processes).
  Under distributed evaluation the gathered rows are de-duplicated by their dataset row ``index``
  (Lightning's ``DistributedSampler`` pads an odd-sized set with repeated rows), so every sample
  counts exactly once. A class with no positives or no negatives in the evaluated set has no
  AUROC: it is reported as ``NaN``.
- **Intervals.** :func:`auroc_report` gives every class a Newcombe score interval
  (:func:`auroc_intervals`): Newcombe's (2006) Mann-Whitney variance as a function of the AUROC,
  inverted (the interval holds every AUROC within ``z`` of its own standard errors of the
  estimate), and widened by the design effect of the report groups, the ratio of the DeLong
  variance with the placement values summed per report (Obuchowski 1997) to the one without
  (:func:`auroc_influence`): the images of one report share its labels and text and are not
  independent. The macro interval adds the classes' covariances (their DeLong correlations) and
  is a Wald interval on the logit scale. By simulation these 95 % intervals cover the true AUROC
  in 95-98 % of test sets from 5 positive reports on, where the cluster percentile bootstrap
  (:func:`bootstrap_auroc`, still available as ``method="bootstrap"``) covers 80-90 % below 20
  (``docs/intervals.md``). Intervals are computed for a fixed class set, the classes with at
  least ``min_positives`` positive and negative reports (default :data:`DEFAULT_MIN_POSITIVES`);
  the macro mean and its interval average exactly that set. The others are reported with their
  point AUROC (when defined) and a note, never averaged in. :func:`compare` gives the paired
  difference of two models on the same rows (per class and macro) with its interval and p-value.
  Bootstrap resample AUROCs come from :func:`weighted_auroc` (weighted Mann-Whitney formula, ties
  count 1/2), vectorised over resamples and classes.
- **Operating points.** :func:`select_thresholds` chooses one decision threshold per class,
  :func:`threshold_metrics` gives sensitivity, specificity, F1 at those thresholds and the
  expected calibration error, :func:`threshold_rows` their table.
- **Tables and figures.** :func:`markdown_table` renders every table of the library (AUROC via
  :func:`format_markdown_table`, operating points, positives per split, trainable parameters);
  :func:`plot_roc_curves` and :func:`plot_reliability` draw the ROC curves and the reliability
  diagram (matplotlib, imported when called: the ``plots`` extra).

Every name is importable from here; each lives in the module that holds its job:
:mod:`~medllama_fusion.metrics.auroc` (per-class AUROC, the fixed class set),
:mod:`~medllama_fusion.metrics.intervals` (Newcombe and DeLong intervals),
:mod:`~medllama_fusion.metrics.bootstrap` (the cluster bootstrap),
:mod:`~medllama_fusion.metrics.comparison` (paired comparison),
:mod:`~medllama_fusion.metrics.report` (the AUROC table and ROC curves),
:mod:`~medllama_fusion.metrics.thresholds` (operating points and calibration),
:mod:`~medllama_fusion.metrics.distributed` (gathering across processes) and
:mod:`~medllama_fusion.metrics.tables` (the Markdown renderer).
"""

from __future__ import annotations

from medllama_fusion.metrics.auroc import (
    DEFAULT_MIN_POSITIVES,
    ci_classes,
    per_class_auroc,
    undefined_classes,
    weighted_auroc,
)
from medllama_fusion.metrics.bootstrap import BootstrapCI, bootstrap_auroc, bootstrap_weights
from medllama_fusion.metrics.comparison import Comparison, compare
from medllama_fusion.metrics.distributed import DefinedMultilabelAUROC, deduplicate
from medllama_fusion.metrics.intervals import (
    AUROCInfluence,
    AUROCIntervals,
    auroc_influence,
    auroc_intervals,
    newcombe_variance,
    placement_values,
)
from medllama_fusion.metrics.report import (
    AUROCReport,
    IntervalMethod,
    auroc_report,
    format_markdown_table,
    plot_roc_curves,
)
from medllama_fusion.metrics.tables import format_interval, markdown_table
from medllama_fusion.metrics.thresholds import (
    ThresholdMethod,
    plot_reliability,
    select_thresholds,
    threshold_metrics,
    threshold_rows,
)

__all__ = [
    "DEFAULT_MIN_POSITIVES",
    "AUROCInfluence",
    "AUROCIntervals",
    "AUROCReport",
    "BootstrapCI",
    "Comparison",
    "DefinedMultilabelAUROC",
    "IntervalMethod",
    "ThresholdMethod",
    "auroc_influence",
    "auroc_intervals",
    "auroc_report",
    "bootstrap_auroc",
    "bootstrap_weights",
    "ci_classes",
    "compare",
    "deduplicate",
    "format_interval",
    "format_markdown_table",
    "markdown_table",
    "newcombe_variance",
    "per_class_auroc",
    "placement_values",
    "plot_reliability",
    "plot_roc_curves",
    "select_thresholds",
    "threshold_metrics",
    "threshold_rows",
    "undefined_classes",
    "weighted_auroc",
]
