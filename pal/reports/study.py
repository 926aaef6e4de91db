"""A study's report written: :func:`report` (from the MLflow store) and :func:`write_report`.

:func:`write_report` turns a study's plain data (:func:`pal.tracking.load_study`) into the
report's folder (figures, CSVs, ``report.md`` from :func:`render_markdown`, ``report.json``) and
its :class:`StudyReport`; :func:`report` loads the study through :mod:`pal.tracking` (MLflow is
touched only there) and logs the folder on the study's parent run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pal.config import ConfigError
from pal.reports.aggregate import (
    Curve,
    _curve_dict,
    code_versions,
    correlations,
    curves,
    reference_variant,
    round_seconds,
    stopping_costs,
    study_metric,
    with_missing_share,
)
from pal.reports.figures import COLORS, _target, plot_curves, plot_paired_differences
from pal.reports.paired import _labels_saved_table, _per_round_table, _verdict_table
from pal.reports.tables import (
    _curve_table,
    _num,
    _pm,
    _stopping_table,
    _write_curves_csv,
    _write_rows_csv,
)
from pal.results import json_safe
from pal.stats import ALPHA, CORRECTIONS, SequentialDesign
from pal.stopping import StopCost
from pal.verdicts import DEFAULT_EFFECT, Verdict, paired_verdicts


@dataclasses.dataclass
class StudyReport:
    """What :func:`report` wrote: ``files`` (name -> path) and the numbers behind them.

    ``labels_saved`` is each compared variant's one labels-saved figure (its verdict's);
    ``code_versions`` counts the finished runs per ``pal.code_version`` (``unknown``: runs
    logged before pal tagged them); ``warnings`` what the report warns of at its top;
    ``stopping`` per variant what stopping at the first validation plateau would have cost."""

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
    stopping: list[StopCost] = dataclasses.field(default_factory=list)


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
    stopping = stopping_costs(runs)
    markdown = render_markdown(
        study, accuracy, missing, corr, seconds, skipped, metric, verdicts, notes, design, stopping
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
                    "stopping": [dataclasses.asdict(c) for c in stopping],
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
        stopping=stopping,
    )


# ---------------------------------------------------------------------- report.md
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
    stopping: list[StopCost] | None = None,
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
    if stopping:
        lines += [*_stopping_table(stopping, metric), ""]
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
