"""Study reports: the paper's figures and tables from a study's MLflow runs.

``pal report STUDY`` (or :func:`report`) reads the runs nested under a sweep or ablation study's
parent run and writes into a folder, and under ``report/`` on the parent run:

- ``accuracy.png`` / ``accuracy.csv``: test accuracy (mIoU for segmentation) against percent
  labeled, one line per variant, mean and a band of one standard deviation over its runs (its
  seeds, in an ablation study; Figures 1, 2, 4 and 5);
- ``missing_classes.png`` / ``.csv`` (studies with ``missing_classes``): the share of each query
  taken from the classes missing from the initial pool (Figure 3 right);
- ``correlations.csv``: Pearson and Spearman correlation of ``S_S`` and ``S_C`` on the unlabeled
  pool per dataset and variant (Table 1);
- ``report.md``: those tables, the seconds per round of each variant, and the labels saved: how
  many labels each variant needs to reach the final accuracy of ``random``.

Everything below :func:`report` works on plain data (``pal.tracking.load_study``'s dicts), so the
aggregation is tested without a store; MLflow itself is only touched through ``pal.tracking``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pal.config import ConfigError
from pal.results import json_safe

REFERENCE = "random"  # the labels-saved line is measured against this variant's final accuracy
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
    std: np.ndarray  # population std over runs (0 for one run)
    runs: np.ndarray  # how many runs have the round


@dataclasses.dataclass
class StudyReport:
    """What :func:`report` wrote: ``files`` (name -> path) and the numbers behind them."""

    name: str
    parent_run_id: str | None
    folder: Path
    files: dict[str, Path]
    accuracy: dict[str, Curve]
    missing: dict[str, Curve]
    labels_saved: dict[str, dict[str, float | None]]
    correlations: list[dict[str, Any]]
    seconds: dict[str, dict[str, float]]
    colors: dict[str, str]
    markdown: str


# ---------------------------------------------------------------------- entry point
def report(
    study: str | os.PathLike,
    *,
    tracking_uri: str | None = None,
    out_dir: str | os.PathLike | None = None,
    log: bool = True,
) -> StudyReport:
    """Write a study's figures and tables; attach them to its parent run when ``log``.

    Args:
        study: the study's name (its job file's ``name``, e.g. ``components``), its parent run
            id, or the job file itself (``ablations/components.py``).
        tracking_uri: the MLflow store (default as for ``pal.run_experiment``).
        out_dir: the folder to write (default ``reports/<name>-<run id[:8]>``).
        log: also log the files as artifacts ``report/*`` of the parent run.

    Raises:
        ConfigError: ``study: ...`` when the store has no such study or it has no finished run.
    """
    from pal.tracking import check_tracking_store, load_study, log_report, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_store(uri)
    data = load_study(uri, _study_name(study))
    folder = Path(out_dir or Path("reports") / f"{data['name']}-{data['parent_run_id'][:8]}")
    result = write_report(data, folder)
    if log:
        log_report(uri, data["parent_run_id"], folder)
    return result


def _study_name(study: str | os.PathLike) -> str:
    """A job file's study name; anything else is taken as a name or run id."""
    text = str(study)
    if text.endswith(".py"):
        from pal.jobs import load_job  # reads the job file only; Ray is not imported

        return load_job(text).name
    return text


# ---------------------------------------------------------------------- plain data -> files
def write_report(study: dict[str, Any], folder: str | os.PathLike) -> StudyReport:
    """Aggregate ``study`` (see :func:`pal.tracking.load_study`) and write the files."""
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
    accuracy = curves(runs, "test_accuracy")
    saved = labels_saved(accuracy, reference_variant(runs))
    files["accuracy.csv"] = _write_curves_csv(accuracy, folder / "accuracy.csv", "test_accuracy")
    files["accuracy.png"] = folder / "accuracy.png"
    plot_curves(
        accuracy,
        files["accuracy.png"],
        colors,
        ylabel=f"test {metric}",
        title=f"{study['name']}: {metric} vs labeled (mean ± 1 std over runs)",
        target=_target(accuracy, saved),
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

    corr = correlations(runs)
    if corr:
        files["correlations.csv"] = _write_rows_csv(corr, folder / "correlations.csv")
    seconds = round_seconds(runs)
    markdown = render_markdown(study, accuracy, missing, saved, corr, seconds, skipped, metric)
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
                    "accuracy": {v: _curve_dict(c) for v, c in accuracy.items()},
                    "missing_class_share": {v: _curve_dict(c) for v, c in missing.items()},
                    "labels_saved": saved,
                    "correlations": corr,
                    "seconds": seconds,
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
    )


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
        values = _matrix(group, metric, rounds)  # [runs, R], NaN where a run lacks a round
        labeled = _matrix(group, "n_labeled", rounds)
        percent = np.stack([_percent(r, rounds) for r in group])
        runs_per_round = np.isfinite(values).sum(axis=0)
        out[variant] = Curve(
            variant=variant,
            rounds=np.asarray(rounds),
            n_labeled=_nanmean(labeled),
            percent=_nanmean(percent),
            mean=_nanmean(values),
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


def labels_saved(
    accuracy: dict[str, Curve], reference: str | None
) -> dict[str, dict[str, float | None]]:
    """Labels each variant needs to reach the reference's final mean accuracy.

    The mean curve is interpolated linearly in ``|D_L|`` between rounds. ``needed`` is ``None``
    when a variant never reaches the target; ``saved`` is the reference's final ``|D_L|`` less
    ``needed`` (positive: fewer labels than the reference) and ``saved_percent`` the same as a
    percent of the reference's labels.
    """
    if reference is None or reference not in accuracy:
        return {}
    ref = accuracy[reference]
    target, ref_labels = float(ref.mean[-1]), float(ref.n_labeled[-1])
    out = {}
    for variant, curve in accuracy.items():
        needed = first_crossing(curve.n_labeled, curve.mean, target)
        out[variant] = {
            "reference": variant == reference,
            "target_accuracy": target,
            "reference_labels": ref_labels,
            "needed": needed,
            "saved": None if needed is None else ref_labels - needed,
            "saved_percent": None if needed is None else 100.0 * (ref_labels - needed) / ref_labels,
        }
    return out


def first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The smallest ``x`` where the piecewise-linear ``y(x)`` reaches ``target`` (or ``None``).

    >>> first_crossing(np.array([100., 200.]), np.array([0.8, 0.9]), 0.85)
    150.0
    """
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return None
    if y[0] >= target:
        return float(x[0])
    above = np.nonzero(y >= target)[0]
    if len(above) == 0:
        return None
    i = int(above[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


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
            row[f"{metric}_std"] = float(values.std()) if len(values) else math.nan
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
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _target(accuracy: dict[str, Curve], saved: dict) -> tuple[float, str] | None:
    if not saved:
        return None
    first = next(iter(saved.values()))
    return first["target_accuracy"], f"{REFERENCE}'s final accuracy"


def study_metric(runs: list[dict[str, Any]]) -> str:
    """What the runs' ``test_accuracy`` holds: ``mIoU`` for segmentation runs (they log
    ``test_miou``), else ``accuracy``."""
    return "mIoU" if any("test_miou" in r["history"] for r in runs) else "accuracy"


# ---------------------------------------------------------------------- tables
def render_markdown(
    study: dict[str, Any],
    accuracy: dict[str, Curve],
    missing: dict[str, Curve],
    saved: dict[str, dict],
    corr: list[dict],
    seconds: dict[str, dict[str, float]],
    skipped: list[dict],
    metric: str = "accuracy",
) -> str:
    lines = [f"# Study `{study['name']}`", ""]
    if study.get("parent_run_id"):
        lines += [f"MLflow parent run `{study['parent_run_id']}`.", ""]
    lines += [f"## Test {metric} (mean ± std over runs)", "", *_curve_table(accuracy, True), ""]
    if saved:
        target = next(iter(saved.values()))
        lines += [
            f"## Labels saved (to reach {REFERENCE}'s final accuracy "
            f"{target['target_accuracy']:.4f} at {target['reference_labels']:.0f} labels)",
            "",
            "| variant | labels needed | labels saved |",
            "| --- | --- | --- |",
        ]
        for variant, row in saved.items():
            if row["reference"]:
                lines.append(f"| {variant} | {row['reference_labels']:.0f} | (reference) |")
            elif row["needed"] is None:
                lines.append(f"| {variant} | not reached | - |")
            else:
                lines.append(
                    f"| {variant} | {row['needed']:.0f} | {row['saved']:.0f} "
                    f"({row['saved_percent']:.1f}%) |"
                )
        lines.append("")
    if missing:
        lines += [
            "## Share of each query from the classes missing at the start",
            "",
            *_curve_table(missing, False),
            "",
        ]
    if corr:
        lines += [
            "## S_S vs S_C correlation on the unlabeled pool (Table 1)",
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
def _matrix(runs: list[dict], metric: str, rounds: list[int]) -> np.ndarray:
    return np.array(
        [[r["history"].get(metric, {}).get(s, math.nan) for s in rounds] for r in runs],
        dtype=float,
    ).reshape(len(runs), len(rounds))


def _percent(run: dict, rounds: list[int]) -> np.ndarray:
    """Percent labeled per round: the logged metric, else from ``pool_size - val_size``."""
    logged = run["history"].get("percent_labeled")
    if logged:
        return np.array([logged.get(s, math.nan) for s in rounds], dtype=float)
    labeled = np.array([run["history"].get("n_labeled", {}).get(s, math.nan) for s in rounds])
    try:
        pool = int(run["params"]["pool_size"]) - int(run["params"].get("val_size", 0))
    except (KeyError, ValueError):  # pool_size None: the whole split, size not in the params
        return np.full(len(rounds), math.nan)
    return 100.0 * labeled / pool


def _dataset_label(dataset: str) -> str:
    """``npz:/long/path/mnist.npz`` -> ``npz:mnist.npz``; registered names as they are."""
    kind, sep, path = dataset.partition(":")
    return f"{kind}:{Path(path).name}" if sep else dataset


def _nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a round no run has is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _nanstd(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(a, axis=0)  # population std, as over seeds


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
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _round(value: float, digits: int) -> float | str:
    return round(float(value), digits) if math.isfinite(value) else ""
