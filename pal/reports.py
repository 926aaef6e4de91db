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
(:mod:`pal.provenance`). Everything below :func:`report` works on plain data
(``pal.tracking.load_study``'s dicts), so the aggregation is tested without a store; MLflow
itself is only touched through ``pal.tracking``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pal.config import ConfigError
from pal.labels_saved import DESCRIPTION as LABELS_SAVED_DESCRIPTION
from pal.labels_saved import saved_cell
from pal.results import json_safe
from pal.stats import ALPHA, CORRECTIONS, SequentialDesign
from pal.verdicts import (
    DEFAULT_EFFECT,
    MIN_SEEDS,
    Verdict,
    column_nanmean,
    metric_matrix,
    paired_verdicts,
    percent_labeled,
)

REFERENCE = "random"  # the variant every other is compared with, unless a study has pairs
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclasses.dataclass
class Curve:
    """One variant's metric over rounds, aggregated over its runs (arrays are ``[R]``)."""

    variant: str
    rounds: np.ndarray
    n_labeled: np.ndarray  # mean |D_L| per round
    percent: np.ndarray  # mean percent labeled per round (NaN when the pool size is unknown)
    mean: np.ndarray
    std: np.ndarray  # sample std over runs (n - 1; NaN for one run)
    runs: np.ndarray  # how many runs have the round


@dataclasses.dataclass
class StudyReport:
    """What :func:`report` wrote: ``files`` (name -> path) and the numbers behind them.

    ``labels_saved`` is each compared variant's one labels-saved figure (its verdict's);
    ``code_versions`` counts the finished runs per ``pal.code_version`` (``unknown``: runs
    logged before pal tagged them); ``warnings`` what the report warns of at its top."""

    name: str
    parent_run_id: str | None
    folder: Path
    files: dict[str, Path]
    accuracy: dict[str, Curve]
    missing: dict[str, Curve]
    labels_saved: dict[str, dict[str, Any]]
    correlations: list[dict[str, Any]]
    seconds: dict[str, dict[str, float]]
    colors: dict[str, str]
    markdown: str
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)
    code_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------- entry point
def report(
    study: str | os.PathLike,
    *,
    tracking_uri: str | None = None,
    out_dir: str | os.PathLike | None = None,
    log: bool = True,
    correction: str | None = None,
    alpha: float = ALPHA,
    effect: float = DEFAULT_EFFECT,
) -> StudyReport:
    """Write a study's figures and tables; attach them to its parent run when ``log``.

    Args:
        study: the study's name (its job file's ``name``, e.g. ``components``), its parent run
            id, or the job file itself (``ablations/components.py``).
        tracking_uri: the MLflow store (default as for ``pal.run_experiment``).
        out_dir: the folder to write (default ``reports/<name>-<run id[:8]>``).
        log: also log the files as artifacts ``report/*`` of the parent run.
        correction: the family-wise correction, ``holm`` or ``none`` (default: the study job's
            ``correction``, else ``holm``).
        alpha: the family's error rate.
        effect: the AUC difference (a fraction: 0.01 is one point) the seeds-needed column is
            computed for.

    Raises:
        ConfigError: ``study: ...`` when the store has no such study or it has no finished run;
            ``correction``/``alpha``/``effect`` naming what is allowed.
    """
    from pal.tracking import check_tracking_store, load_study, log_report, resolve_tracking_uri

    check_report_options(correction, alpha, effect)
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_store(uri)
    data = load_study(uri, _study_name(study))
    folder = Path(out_dir or Path("reports") / f"{data['name']}-{data['parent_run_id'][:8]}")
    result = write_report(data, folder, correction=correction, alpha=alpha, effect=effect)
    if log:
        log_report(uri, data["parent_run_id"], folder)
    return result


def check_report_options(correction: str | None, alpha: float, effect: float) -> None:
    """Refuse a correction, level or effect a report cannot use.

    Raises:
        ConfigError: naming the option and what is allowed.
    """
    if correction is not None and correction not in CORRECTIONS:
        raise ConfigError(f"correction: must be one of {list(CORRECTIONS)}, got {correction!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha: must be in (0, 1), got {alpha!r}")
    if not effect > 0.0:
        raise ConfigError(f"effect: must be > 0 (a fraction of the metric), got {effect!r}")


def _study_name(study: str | os.PathLike) -> str:
    """A job file's study name; anything else is taken as a name or run id."""
    text = str(study)
    if text.endswith(".py"):
        from pal.jobs import load_job  # reads the job file only; Ray is not imported

        return load_job(text).name
    return text


# ---------------------------------------------------------------------- plain data -> files
def write_report(
    study: dict[str, Any],
    folder: str | os.PathLike,
    *,
    correction: str | None = None,
    alpha: float = ALPHA,
    effect: float = DEFAULT_EFFECT,
) -> StudyReport:
    """Aggregate ``study`` (see :func:`pal.tracking.load_study`) and write the files.

    ``correction`` defaults to the study's (its job's ``correction``), else ``holm``; a study
    grown with ``--until-decided`` is decided by its recorded ``sequential`` design."""
    check_report_options(correction, alpha, effect)
    runs = [r for r in study["runs"] if r["status"] == "FINISHED"]
    skipped = [r for r in study["runs"] if r["status"] != "FINISHED"]
    if not runs:
        raise ConfigError(
            f"study: {study['name']!r} has no finished run yet "
            f"({len(skipped)} runs: {sorted({r['status'] for r in skipped})})"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    colors = {v: COLORS[i % len(COLORS)] for i, v in enumerate(variants)}
    files: dict[str, Path] = {}

    metric = study_metric(runs)
    reference = reference_variant(runs)
    pairs = study.get("pairs") or {}
    correction = correction or study.get("correction") or "holm"
    design = SequentialDesign(**study["sequential"]) if study.get("sequential") else None
    verdicts = paired_verdicts(
        runs,
        "test_accuracy",
        reference,
        pairs=pairs,
        correction=correction,
        alpha=alpha,
        effect=effect,
        design=design,
    )
    saved = {v.variant: v.labels_saved for v in verdicts}
    versions = code_versions(runs)
    notes = []
    if len(versions) > 1:
        listed = ", ".join(f"`{v}` ({n} runs)" for v, n in versions.items())
        notes.append(
            f"the study's finished runs come from {len(versions)} code versions: {listed}; "
            "a verdict across them compares code as well as methods"
        )
    accuracy = curves(runs, "test_accuracy")
    files["accuracy.csv"] = _write_curves_csv(accuracy, folder / "accuracy.csv", "test_accuracy")
    files["accuracy.png"] = folder / "accuracy.png"
    plot_curves(
        accuracy,
        files["accuracy.png"],
        colors,
        ylabel=f"test {metric}",
        title=f"{study['name']}: {metric} vs labeled (mean ± 1 sample std over runs)",
        target=_target(accuracy, reference if not pairs else None, metric),
    )

    missing = curves([with_missing_share(r) for r in runs], "missing_class_share", first_round=1)
    if missing:
        files["missing_classes.csv"] = _write_curves_csv(
            missing, folder / "missing_classes.csv", "missing_class_share"
        )
        files["missing_classes.png"] = folder / "missing_classes.png"
        plot_curves(
            missing,
            files["missing_classes.png"],
            colors,
            ylabel="share of the query from the missing classes",
            title=f"{study['name']}: classes missing from the initial pool",
            by_round=True,
        )

    if any(v.rounds for v in verdicts):
        against = "its pair's" if pairs else f"{reference}'s"
        files["paired_difference.png"] = folder / "paired_difference.png"
        plot_paired_differences(
            verdicts,
            files["paired_difference.png"],
            colors,
            ylabel=f"test {metric} minus {against} (points)",
            title=f"{study['name']}: paired by seed vs {against[:-2]} (mean, 95% t band)",
        )

    corr = correlations(runs)
    if corr:
        files["correlations.csv"] = _write_rows_csv(corr, folder / "correlations.csv")
    seconds = round_seconds(runs)
    markdown = render_markdown(
        study, accuracy, missing, corr, seconds, skipped, metric, verdicts, notes, design
    )
    files["report.md"] = folder / "report.md"
    files["report.md"].write_text(markdown)
    files["report.json"] = folder / "report.json"
    files["report.json"].write_text(
        json.dumps(
            json_safe(
                {
                    "study": study["name"],
                    "parent_run_id": study.get("parent_run_id"),
                    "metric": metric,
                    "family": {
                        "comparisons": len(verdicts),
                        "family_size": verdicts[0].family_size if verdicts else 0,
                        "correction": correction,
                        "alpha": alpha,
                        "design": design.to_dict() if design else None,
                    },
                    "accuracy": {v: _curve_dict(c) for v, c in accuracy.items()},
                    "missing_class_share": {v: _curve_dict(c) for v, c in missing.items()},
                    "labels_saved": saved,
                    "verdicts": [v.as_dict() for v in verdicts],
                    "correlations": corr,
                    "seconds": seconds,
                    "code_versions": versions,
                    "warnings": notes,
                }
            ),
            indent=1,
            allow_nan=False,
        )
    )
    return StudyReport(
        name=study["name"],
        parent_run_id=study.get("parent_run_id"),
        folder=folder,
        files=files,
        accuracy=accuracy,
        missing=missing,
        labels_saved=saved,
        correlations=corr,
        seconds=seconds,
        colors=colors,
        markdown=markdown,
        verdicts=verdicts,
        code_versions=versions,
        warnings=notes,
    )


def code_versions(runs: list[dict]) -> dict[str, int]:
    """Runs per code version (``pal.code_version``; a run resumed by other code counts under
    each of its versions; ``unknown`` for runs without the tag), most common first."""
    counts = Counter(word for r in runs for word in (r.get("code_version") or "unknown").split())
    return dict(counts.most_common())


# ---------------------------------------------------------------------- aggregation
def curves(runs: list[dict], metric: str, first_round: int = 0) -> dict[str, Curve]:
    """Per variant: ``metric``'s mean and std over the variant's runs at every round.

    A round counts for the runs that logged it (``runs``); rounds before ``first_round`` are
    left out (queries start in round 1). Variants without the metric are left out.
    """
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == variant and r["history"].get(metric)]
        rounds = sorted({s for r in group for s in r["history"][metric] if s >= first_round})
        if not rounds:
            continue
        values = metric_matrix(group, metric, rounds)  # [runs, R], NaN where a run lacks one
        labeled = metric_matrix(group, "n_labeled", rounds)
        percent = np.stack([percent_labeled(r, rounds) for r in group])
        runs_per_round = np.isfinite(values).sum(axis=0)
        out[variant] = Curve(
            variant=variant,
            rounds=np.asarray(rounds),
            n_labeled=column_nanmean(labeled),
            percent=column_nanmean(percent),
            mean=column_nanmean(values),
            std=_nanstd(values),
            runs=runs_per_round,
        )
    return out


def reference_variant(runs: list[dict]) -> str | None:
    """The variant ``random`` by name, else the one whose runs all use the random strategy."""
    variants = dict.fromkeys(r["variant"] for r in runs)
    if REFERENCE in variants:
        return REFERENCE
    for variant in variants:
        group = [r for r in runs if r["variant"] == variant]
        if all(r["params"].get("strategy") == REFERENCE for r in group):
            return variant
    return None


# ---------------------------------------------------------------------- per-run tables
def with_missing_share(run: dict) -> dict:
    """``run`` with a ``missing_class_share`` history, computed from its per-class query shares
    and its ``missing_classes`` when the run did not log the share itself."""
    if run["history"].get("missing_class_share"):
        return run
    try:
        missing = json.loads(run["params"].get("missing_classes", "[]"))
    except json.JSONDecodeError:
        return run
    keys = [f"query_class_rate/{name}" for name in missing]
    if not missing or not all(run["history"].get(k) for k in keys):
        return run
    steps = sorted(set.intersection(*(set(run["history"][k]) for k in keys)))
    share = {s: sum(run["history"][k][s] for k in keys) for s in steps}
    return {**run, "history": {**run["history"], "missing_class_share": share}}


def correlations(runs: list[dict]) -> list[dict[str, Any]]:
    """Table 1: mean and std of ``S_S``-``S_C`` Pearson and Spearman over runs and query
    rounds, per dataset and variant (only runs that logged them: PAL with ``lambda1 > 0``)."""
    rows = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        if run["history"].get("ss_sc_pearson"):
            key = (_dataset_label(run["params"].get("dataset", "?")), run["variant"])
            groups.setdefault(key, []).append(run)
    for (dataset, variant), group in groups.items():
        row: dict[str, Any] = {"dataset": dataset, "variant": variant, "runs": len(group)}
        for metric in ("ss_sc_pearson", "ss_sc_spearman"):
            values = np.array(
                [v for r in group for v in r["history"].get(metric, {}).values()], dtype=float
            )
            values = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row["queries"] = len(values)
        rows.append(row)
    return rows


def round_seconds(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per variant: mean seconds of a query (rounds >= 1), of task training, of evaluation, of a
    whole round (rounds >= 1)."""
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == variant]
        row = {}
        for metric, first in (
            ("query_seconds", 1),
            ("train_seconds", 0),
            ("eval_seconds", 0),
            ("round_seconds", 1),
        ):
            values = [
                v for r in group for s, v in r["history"].get(metric, {}).items() if s >= first
            ]
            row[metric] = float(np.mean(values)) if values else math.nan
        out[variant] = row
    return out


# ---------------------------------------------------------------------- figures
def plot_curves(
    curves_: dict[str, Curve],
    path: Path,
    colors: dict[str, str],
    *,
    ylabel: str,
    title: str = "",
    by_round: bool = False,
    target: tuple[float, str] | None = None,
) -> None:
    """Mean line and ±1 std band per variant against percent labeled (or ``|D_L|``, or rounds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    use_percent = all(np.isfinite(c.percent).all() for c in curves_.values())
    for variant, c in curves_.items():
        x = c.rounds if by_round else (c.percent if use_percent else c.n_labeled)
        color = colors[variant]
        ax.fill_between(x, c.mean - c.std, c.mean + c.std, color=color, alpha=0.2, linewidth=0)
        ax.plot(x, c.mean, marker="o", color=color, label=f"{variant} ({int(c.runs.max())} runs)")
    if target is not None:
        ax.axhline(target[0], color="black", linestyle="--", linewidth=1, label=target[1])
    if by_round:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("query round")
    else:
        ax.set_xlabel("labeled (% of the pool)" if use_percent else "labeled samples")
    _finish(fig, ax, path, ylabel, title)


def plot_paired_differences(
    verdicts: list[Verdict], path: Path, colors: dict[str, str], *, ylabel: str, title: str = ""
) -> None:
    """Per variant the mean paired difference to the reference (in points: x100) against percent
    labeled (or ``|D_L|``), its 95% t band where it has one, and a line at 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = [v for v in verdicts if v.rounds]
    use_percent = all(math.isfinite(d.percent_labeled) for v in shown for d in v.rounds)
    ax.axhline(0.0, color="black", linewidth=1)
    for v in shown:
        x = np.array([d.percent_labeled if use_percent else d.n_labeled for d in v.rounds])
        diff = 100.0 * np.array([d.diff for d in v.rounds])
        ci = 100.0 * np.array([d.ci if d.ci else (math.nan, math.nan) for d in v.rounds])
        color = colors.get(v.variant, "black")
        ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2, linewidth=0)
        ax.plot(x, diff, marker="o", color=color, label=f"{v.variant} ({v.n_seeds} seeds)")
    ax.set_xlabel("labeled (% of the pool)" if use_percent else "labeled samples")
    _finish(fig, ax, path, ylabel, title)


def _finish(fig, ax, path: Path, ylabel: str, title: str) -> None:
    """Label, grid and legend ``ax`` and write ``fig`` to ``path`` as a PNG."""
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _target(
    accuracy: dict[str, Curve], reference: str | None, metric: str
) -> tuple[float, str] | None:
    """The reference's final mean (the labels-saved target) as a line on the accuracy plot."""
    if reference is None or reference not in accuracy:
        return None
    curve = accuracy[reference]
    return float(curve.mean[-1]), f"{reference}'s final {metric} ({int(curve.runs[-1])} runs)"


def study_metric(runs: list[dict[str, Any]]) -> str:
    """What the runs' ``test_accuracy`` holds: ``mIoU`` for segmentation runs (they log
    ``test_miou``), else ``accuracy``."""
    return "mIoU" if any("test_miou" in r["history"] for r in runs) else "accuracy"


# ---------------------------------------------------------------------- tables
def render_markdown(
    study: dict[str, Any],
    accuracy: dict[str, Curve],
    missing: dict[str, Curve],
    corr: list[dict],
    seconds: dict[str, dict[str, float]],
    skipped: list[dict],
    metric: str = "accuracy",
    verdicts: list[Verdict] | None = None,
    notes: list[str] | None = None,
    design: SequentialDesign | None = None,
) -> str:
    lines = [f"# Study `{study['name']}`", ""]
    if study.get("parent_run_id"):
        lines += [f"MLflow parent run `{study['parent_run_id']}`.", ""]
    for note in notes or []:
        lines += [f"**Warning:** {note}.", ""]
    lines += [
        f"## Test {metric} (mean ± sample std over runs)",
        "",
        *_curve_table(accuracy, True),
        "",
    ]
    if verdicts:
        lines += [*_verdict_table(verdicts, metric, design), ""]
        lines += [*_labels_saved_table(verdicts, metric), ""]
        lines += [*_per_round_table(verdicts, metric), ""]
    if missing:
        lines += [
            "## Share of each query from the classes missing at the start "
            "(mean ± sample std over runs)",
            "",
            *_curve_table(missing, False),
            "",
        ]
    if corr:
        lines += [
            "## S_S vs S_C correlation on the unlabeled pool (Table 1; mean ± sample std)",
            "",
            "| dataset | variant | runs | queries | Pearson | Spearman |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in corr:
            lines.append(
                f"| {row['dataset']} | {row['variant']} | {row['runs']} | {row['queries']} | "
                f"{_pm(row['ss_sc_pearson_mean'], row['ss_sc_pearson_std'], 2)} | "
                f"{_pm(row['ss_sc_spearman_mean'], row['ss_sc_spearman_std'], 2)} |"
            )
        lines.append("")
    lines += [
        "## Seconds per round (means)",
        "",
        "| variant | query | task training | evaluation | whole round |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant, row in seconds.items():
        lines.append(
            f"| {variant} | {_num(row['query_seconds'], 2)} | {_num(row['train_seconds'], 2)} | "
            f"{_num(row['eval_seconds'], 2)} | {_num(row['round_seconds'], 2)} |"
        )
    if skipped:
        lines += [
            "",
            f"Left out: {len(skipped)} unfinished runs "
            + ", ".join(f"`{r['run_name']}` ({r['status']})" for r in skipped),
        ]
    return "\n".join(lines) + "\n"


def family_sentence(verdicts: list[Verdict], design: SequentialDesign | None = None) -> str:
    """What the verdicts are, as a family: how many comparisons, the correction, the design."""
    v = verdicts[0]
    m, total = v.family_size, len(verdicts)
    untested = (
        f" ({total - m} of the {total} without a verdict are not counted)" if m < total else ""
    )
    level = f"{100 * v.alpha:g}%"
    if v.correction == "holm":
        text = (
            f"The family is {m} comparison{'s' if m != 1 else ''}{untested}; its family-wise "
            f"error rate (the chance of any false `better` or `worse`) is held at {level} by "
            "Holm's step-down procedure: `p (Holm)` is each comparison's adjusted p-value and "
            f"the verdict is `better`/`worse` where it is at most {v.alpha:g}."
        )
    else:
        worst = 1 - (1 - v.alpha) ** max(m, 1)
        text = (
            f"The family is {m} comparison{'s' if m != 1 else ''}{untested}, each tested at "
            f"{level} on its own (correction `none`): with {m} comparisons the chance of at "
            f"least one false `better` or `worse` is up to {100 * worst:.0f}%."
        )
    if design is not None:
        crit = ", ".join(
            f"{n}: {c:.2f}"
            for n, c in zip(design.looks, design.critical_values(v.alpha), strict=True)
        )
        text += (
            f" The study was grown until decided with a group-sequential design: looks at "
            f"{', '.join(map(str, design.looks))} seeds, {design.boundary.replace('_', '-')} "
            "boundary on each comparison's paired t statistic (|t| to cross, for one comparison "
            f"at {level}, by seeds: {crit}); `p` is the repeated p-value over the looks reached, "
            "and a comparison short of its last look without a decision is `open`."
        )
    return text


def _verdict_table(
    verdicts: list[Verdict], metric: str, design: SequentialDesign | None = None
) -> list[str]:
    references = list(dict.fromkeys(v.reference for v in verdicts))
    one = len(references) == 1
    reference = f"`{references[0]}`" if one else "its reference"
    v0 = verdicts[0]
    effect = f"{100 * v0.effect:g}"
    lines = [
        f"## Verdicts (against {reference}, paired by seed)",
        "",
        f"Each run is paired with {f'the {reference} run' if one else 'its reference'} of the "
        "same seed (the same initial pool), over the seeds and rounds both finished. AUC: the "
        f"mean test {metric} over rounds 1..R; its difference in {metric} points with a 95% "
        "paired t interval for the comparison alone (not adjusted for the family). "
        + family_sentence(verdicts, design)
        + f" Fewer than {MIN_SEEDS} shared seeds, a non-finite {metric}, a round one side "
        "lacks, labeled counts that differ, or zero variance: no verdict, and the reason. "
        f"Detectable: the smallest AUC difference (points) the comparison detects with 80% "
        f"power at its seeds and their spread, at the strictest level the family holds it to "
        f"({_level_text(v0)}); seeds for {effect} point: what that would take for a "
        f"{effect}-point difference.",
        "",
        f"| variant | reference | seeds | AUC difference (points, 95% CI) | p | "
        f"p ({'Holm' if v0.correction == 'holm' else 'unadjusted'}) | verdict | detectable "
        f"(80% power) | seeds for {effect} point |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(
            f"| {v.variant} | {v.reference} | {v.n_seeds} | {_points(v.auc_diff, v.auc_ci)} | "
            f"{_p(v.p_value)} | {_p(v.p_adjusted)} | {v.verdict} | "
            f"{_num(100 * v.detectable_effect, 2) if v.detectable_effect else '-'} | "
            f"{v.seeds_needed if v.seeds_needed else '-'} |"
        )
    flagged = [v for v in verdicts if v.flags]
    if flagged:
        lines.append("")
        for v in flagged:
            text = "; ".join(v.flags)
            if v.underfit:
                text += ": " + "; ".join(v.underfit)
            lines.append(f"- **{v.variant}**: {text}.")
    return lines


def _labels_saved_table(verdicts: list[Verdict], metric: str) -> list[str]:
    shown = [v for v in verdicts if v.labels_saved.get("saved") is not None]
    if not shown:
        return []
    lines = [
        f"## Labels saved (to reach the reference's final {metric}, on the shared seeds)",
        "",
        LABELS_SAVED_DESCRIPTION.replace("accuracy", metric) + " The verdict remains the AUC's.",
        "",
        f"| variant | reference | seeds | target {metric} | labels saved (interval) "
        "| % of the reference's labels |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in shown:
        saved = v.labels_saved
        lines.append(
            f"| {v.variant} | {v.reference} | {saved['n_seeds']} | {saved['target']:.4f} | "
            f"{saved_cell(saved)} | {saved_cell(saved, percent=True)} |"
        )
    return lines


def _per_round_table(verdicts: list[Verdict], metric: str) -> list[str]:
    rounds = sorted({d.round for v in verdicts for d in v.rounds})
    if not rounds:
        return []
    lines = [
        f"Per round: the mean paired difference in test {metric} (points, 95% t interval).",
        "",
        "| variant | reference | " + " | ".join(f"round {r}" for r in rounds) + " |",
        "| --- | --- |" + " --- |" * len(rounds),
    ]
    for v in verdicts:
        by_round = {d.round: _points(d.diff, d.ci) for d in v.rounds}
        cells = " | ".join(by_round.get(r, "-") for r in rounds)
        lines.append(f"| {v.variant} | {v.reference} | {cells} |")
    return lines


def _level_text(v: Verdict) -> str:
    if v.correction == "holm" and v.family_size > 1:
        return f"{v.alpha:g} / {v.family_size} = {v.alpha / v.family_size:.4g}"
    return f"{v.alpha:g}"


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}"


def _points(diff: float | None, ci: list[float] | None) -> str:
    if diff is None or not math.isfinite(diff):
        return "-"
    text = f"{100 * diff:+.2f}"
    if ci is not None:
        text += f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    return text


def _curve_table(curves_: dict[str, Curve], percent: bool) -> list[str]:
    rounds = sorted({int(r) for c in curves_.values() for r in c.rounds})
    heads = []
    for r in rounds:
        head = f"round {r}"
        if percent:
            pct = [c.percent[c.rounds == r] for c in curves_.values() if r in c.rounds]
            pct = float(np.nanmean(np.concatenate(pct))) if pct else math.nan
            if math.isfinite(pct):
                head = f"{pct:.1f}%"
        heads.append(head)
    lines = ["| variant | runs | " + " | ".join(heads) + " |", "| --- " * (len(rounds) + 2) + "|"]
    for variant, c in curves_.items():
        cells = []
        for r in rounds:
            i = np.nonzero(c.rounds == r)[0]
            cells.append(_pm(c.mean[i[0]], c.std[i[0]], 4) if len(i) else "-")
        lines.append(f"| {variant} | {int(c.runs.max())} | " + " | ".join(cells) + " |")
    return lines


def _write_curves_csv(curves_: dict[str, Curve], path: Path, metric: str) -> Path:
    rows = [
        {
            "variant": variant,
            "round": int(c.rounds[i]),
            "n_labeled": _round(c.n_labeled[i], 1),
            "percent_labeled": _round(c.percent[i], 3),
            f"{metric}_mean": _round(c.mean[i], 6),
            f"{metric}_std": _round(c.std[i], 6),
            "runs": int(c.runs[i]),
        }
        for variant, c in curves_.items()
        for i in range(len(c.rounds))
    ]
    return _write_rows_csv(rows, path)


def _write_rows_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------- helpers
def _dataset_label(dataset: str) -> str:
    """``npz:/long/path/mnist.npz`` -> ``npz:mnist.npz``; registered names as they are."""
    kind, sep, path = dataset.partition(":")
    return f"{kind}:{Path(path).name}" if sep else dataset


def _nanstd(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(a, axis=0, ddof=1)  # sample std over runs: NaN for a single run


def _curve_dict(c: Curve) -> dict[str, list]:
    return {
        "rounds": c.rounds.tolist(),
        "n_labeled": c.n_labeled.tolist(),
        "percent_labeled": c.percent.tolist(),
        "mean": c.mean.tolist(),
        "std": c.std.tolist(),
        "runs": c.runs.tolist(),
    }


def _pm(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(std):  # one run: no spread
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _round(value: float, digits: int) -> float | str:
    return round(float(value), digits) if math.isfinite(value) else ""
