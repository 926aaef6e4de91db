"""Study reports: the paper's figures and tables from a study's MLflow runs.

``pal report STUDY`` (or :func:`report`) reads the runs nested under a sweep or ablation study's
parent run and writes into a folder, and under ``report/`` on the parent run:

- ``accuracy.png`` / ``accuracy.csv``: test accuracy (mIoU for segmentation) against percent
  labeled, one line per variant, mean and a band of one sample standard deviation over its
  runs (its seeds, in an ablation study; Figures 1, 2, 4 and 5);
- ``missing_classes.png`` / ``.csv`` (studies with ``missing_classes``): the share of each query
  taken from the classes missing from the initial pool (Figure 3 right);
- ``correlations.csv``: Pearson and Spearman correlation of ``S_S`` and ``S_C`` on the unlabeled
  pool per dataset and variant (Table 1);
- ``paired_difference.png``: each variant's test accuracy less its reference's (``random``) in
  runs of the same seed, mean and 95% t band over the shared seeds, against percent labeled;
- ``report.md`` / ``report.json``: those tables, the seconds per round of each variant, and the
  verdicts (:mod:`pal.verdicts`): each variant against its reference, paired by seed, decided
  as a family with Holm's correction (or none, when asked), with the effect each comparison
  could detect, the seeds it would need, and the labels it saves (:mod:`pal.labels_saved`).

The report warns when the study's runs come from more than one code version
(:mod:`pal.provenance`). Everything but :func:`report` works on plain data
(``pal.tracking.load_study``'s dicts), so the aggregation is tested without a store; MLflow
itself is only touched through ``pal.tracking``.

- :mod:`pal.reports.study`: :func:`report`, :func:`write_report` and ``report.md``;
- :mod:`pal.reports.aggregate`: curves, correlations and seconds per round from the runs;
- :mod:`pal.reports.figures`: the PNG figures (matplotlib only when one is drawn);
- :mod:`pal.reports.tables`: the curve tables and CSV files;
- :mod:`pal.reports.paired`: the tables of the paired-by-seed verdicts.

The names below are re-exported here; the submodules import each other directly.
"""

from __future__ import annotations

from pal.reports.aggregate import (
    REFERENCE,
    Curve,
    code_versions,
    correlations,
    curves,
    reference_variant,
    round_seconds,
    study_metric,
    with_missing_share,
)
from pal.reports.figures import COLORS, plot_curves, plot_paired_differences
from pal.reports.paired import family_sentence
from pal.reports.study import (
    StudyReport,
    check_report_options,
    render_markdown,
    report,
    write_report,
)

__all__ = [
    "COLORS",
    "REFERENCE",
    "Curve",
    "StudyReport",
    "check_report_options",
    "code_versions",
    "correlations",
    "curves",
    "family_sentence",
    "plot_curves",
    "plot_paired_differences",
    "reference_variant",
    "render_markdown",
    "report",
    "round_seconds",
    "study_metric",
    "with_missing_share",
    "write_report",
]
