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
- ``paired_difference.png``: each variant's test accuracy less the reference's (``random``) in
  runs of the same seed, mean and 95% t band over the shared seeds, against percent labeled;
- ``report.md``: those tables, the seconds per round of each variant, the labels saved: how
  many labels each variant needs to reach the final accuracy of ``random``, and the verdicts:
  each variant against ``random``, paired by seed (:func:`paired_verdicts`).

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
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)


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
    reference = reference_variant(runs)
    accuracy = curves(runs, "test_accuracy")
    saved = labels_saved(accuracy, reference)
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

    pairs = study.get("pairs") or {}
    verdicts = paired_verdicts(runs, "test_accuracy", reference, pairs=pairs)
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
        study, accuracy, missing, saved, corr, seconds, skipped, metric, verdicts
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
                    "accuracy": {v: _curve_dict(c) for v, c in accuracy.items()},
                    "missing_class_share": {v: _curve_dict(c) for v, c in missing.items()},
                    "labels_saved": saved,
                    "verdicts": [v.as_dict() for v in verdicts],
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
        verdicts=verdicts,
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


# ---------------------------------------------------------------------- paired verdicts
MIN_SEEDS = 3  # fewer shared seeds than this: no verdict and no intervals
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so a report is reproducible
MIN_DEFINED_SHARE = 0.95  # labels-saved interval only when this share of resamples defines it
NO_VERDICT = f"no verdict (fewer than {MIN_SEEDS} shared seeds)"


@dataclasses.dataclass
class Paired:
    """A variant's and the reference's runs matched by seed: arrays are ``[seeds, rounds]``,
    over the seeds both have a finished run for and the rounds all those runs logged."""

    seeds: list[str]
    rounds: np.ndarray  # [R]
    variant: np.ndarray  # the metric
    reference: np.ndarray
    variant_labeled: np.ndarray  # |D_L|
    reference_labeled: np.ndarray
    percent: np.ndarray  # the variant's percent labeled (NaN when the pool size is unknown)


@dataclasses.dataclass
class RoundDifference:
    """At one round: ``diff``, the mean over shared seeds of (variant - reference) in the metric
    (a fraction, not points), and ``ci``, its 95% paired t interval ``[low, high]`` (``None``
    with fewer than :data:`MIN_SEEDS` seeds); ``n_labeled``/``percent_labeled`` are the
    variant's means over those seeds."""

    round: int
    n_labeled: float
    percent_labeled: float
    diff: float
    ci: list[float] | None


@dataclasses.dataclass
class Verdict:
    """A variant against the reference, paired by seed (see :func:`paired_verdicts`).

    ``auc_diff``: the mean over shared seeds of the paired difference in the area under the
    learning curve, a run's AUC being its mean metric over rounds 1..R (``None`` without shared
    seeds or query rounds); ``auc_ci``: its 95% paired t interval ``[low, high]``; ``verdict``:
    ``better``/``worse`` when that interval lies wholly above/below 0, else ``no difference
    detected``, or a ``no verdict (...)`` saying why there is none. ``labels_saved``: see
    :func:`bootstrap_labels_saved`.
    """

    variant: str
    reference: str
    metric: str
    n_seeds: int
    seeds: list[str]
    auc_diff: float | None
    auc_ci: list[float] | None
    verdict: str
    rounds: list[RoundDifference]
    labels_saved: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paired_verdicts(
    runs: list[dict],
    metric: str,
    reference: str | None,
    *,
    pairs: dict[str, str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[Verdict]:
    """Every other variant against ``reference``, paired by seed (the same seed is the same
    initial pool), one :class:`Verdict` each; ``[]`` without a reference. With ``pairs``
    (variant -> its own reference, a study's ``pairs``), those comparisons instead, for the
    variants that have runs.

    Only finished runs, the seeds both variants have and the rounds all those runs logged count.
    Round 0 (the shared initial pool) is in ``rounds`` but not in the AUC.
    """
    present = list(dict.fromkeys(r["variant"] for r in runs))
    if pairs:
        compared = [(v, ref) for v, ref in pairs.items() if v in present and ref in present]
    elif reference is None:
        return []
    else:
        compared = [(v, reference) for v in present if v != reference]
    return [
        _verdict(pair_by_seed(runs, v, ref, metric), v, ref, metric, resamples, seed)
        for v, ref in compared
    ]


def pair_by_seed(runs: list[dict], variant: str, reference: str, metric: str) -> Paired:
    """``variant``'s and ``reference``'s finished runs matched on the ``seed`` param.

    A seed run twice counts once, with its later run (``load_study`` lists runs by start time).
    """
    ours, theirs = _by_seed(runs, variant, metric), _by_seed(runs, reference, metric)
    seeds = sorted(ours.keys() & theirs.keys(), key=_seed_key)
    pairs = [(ours[s], theirs[s]) for s in seeds]
    steps = [set(r["history"][metric]) for pair in pairs for r in pair]
    rounds = sorted(set.intersection(*steps)) if steps else []
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    return Paired(
        seeds=seeds,
        rounds=np.asarray(rounds, dtype=int),
        variant=_matrix(a, metric, rounds),
        reference=_matrix(b, metric, rounds),
        variant_labeled=_matrix(a, "n_labeled", rounds),
        reference_labeled=_matrix(b, "n_labeled", rounds),
        percent=np.array([_percent(r, rounds) for r in a], dtype=float).reshape(
            len(a), len(rounds)
        ),
    )


def paired_t_interval(
    diffs: np.ndarray, level: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``diffs`` over axis 0 (the seeds) and its paired t interval:
    ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)``, ``sd`` with ``n - 1``; NaN bounds for n < 2.
    """
    from scipy.stats import t

    diffs = np.asarray(diffs, dtype=float)
    n = diffs.shape[0]
    mean = diffs.mean(axis=0) if n else np.full(diffs.shape[1:], math.nan)
    if n < 2:
        nan = np.full_like(mean, math.nan)
        return mean, nan, nan.copy()
    half = t.ppf((1 + level) / 2, n - 1) * diffs.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def bootstrap_labels_saved(
    paired: Paired,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> dict[str, Any]:
    """Labels saved (as :func:`labels_saved`: the reference's final ``|D_L|`` less the labels the
    variant needs to reach the reference's final mean accuracy) on the shared seeds' mean curves,
    with a bootstrap interval over seeds.

    Returns ``{"saved", "saved_percent", "ci", "resamples", "defined", "seed"}``: ``saved``
    ``None`` when the variant's mean curve never reaches the target; ``ci`` the
    ``(1 ± level)/2`` percentiles of labels saved over ``resamples`` resamples of the seeds with
    replacement (a ``numpy`` Generator seeded with ``seed``), ignoring the resamples where it is
    undefined; ``defined`` how many resamples define it; ``ci`` is ``None`` with fewer than
    :data:`MIN_SEEDS` seeds (then ``resamples`` is 0) or when under :data:`MIN_DEFINED_SHARE`
    of the resamples define it.
    """
    n = len(paired.seeds)
    curves_ = (paired.variant, paired.variant_labeled, paired.reference, paired.reference_labeled)
    point = ref_labels = math.nan
    if n and len(paired.rounds):
        point = float(_saved_on_means(*(c.mean(axis=0, keepdims=True) for c in curves_))[0])
        ref_labels = float(paired.reference_labeled[:, -1].mean())
    out: dict[str, Any] = {
        "saved": None if math.isnan(point) else point,
        "saved_percent": None if math.isnan(point) else 100.0 * point / ref_labels,
        "ci": None,
        "resamples": 0,
        "defined": 0,
        "seed": seed,
    }
    if n < MIN_SEEDS or len(paired.rounds) == 0:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    saved = _saved_on_means(*(c[idx].mean(axis=1) for c in curves_))  # [resamples]
    defined = saved[np.isfinite(saved)]
    out["resamples"], out["defined"] = resamples, int(len(defined))
    if len(defined) >= MIN_DEFINED_SHARE * resamples:
        tail = 100 * (1 - level) / 2
        out["ci"] = [float(v) for v in np.percentile(defined, [tail, 100 - tail])]
    return out


def first_crossings(x: np.ndarray, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`first_crossing` row by row: ``x``, ``y`` ``[B, R]``, ``target`` ``[B]`` -> ``[B]``,
    NaN where a row never reaches its target (NaN points are not skipped: a NaN just before
    the crossing makes the row NaN)."""
    above = y >= target[:, None]
    i = above.argmax(axis=1)
    rows = np.arange(len(y))
    prev = np.maximum(i - 1, 0)
    x0, x1, y0, y1 = x[rows, prev], x[rows, i], y[rows, prev], y[rows, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return np.where(above.any(axis=1), np.where(i == 0, x1, between), math.nan)


def _verdict(
    p: Paired, variant: str, reference: str, metric: str, resamples: int, seed: int
) -> Verdict:
    n = len(p.seeds)
    diff, low, high = paired_t_interval(p.variant - p.reference)
    query = p.rounds >= 1
    auc_diff = auc_ci = None
    if n and query.any():
        auc = p.variant[:, query].mean(axis=1) - p.reference[:, query].mean(axis=1)
        mean, lo, hi = (float(v) for v in paired_t_interval(auc))
        auc_diff, auc_ci = mean, ([lo, hi] if n >= MIN_SEEDS else None)
    if n < MIN_SEEDS:
        verdict = NO_VERDICT
    elif auc_ci is None:
        verdict = "no verdict (no shared query rounds)"
    else:
        verdict = (
            "better" if auc_ci[0] > 0 else "worse" if auc_ci[1] < 0 else "no difference detected"
        )
    rounds = [
        RoundDifference(
            round=int(r),
            n_labeled=float(_nanmean(p.variant_labeled[:, i])),
            percent_labeled=float(_nanmean(p.percent[:, i])),
            diff=float(diff[i]),
            ci=[float(low[i]), float(high[i])] if n >= MIN_SEEDS else None,
        )
        for i, r in enumerate(p.rounds)
    ]
    return Verdict(
        variant=variant,
        reference=reference,
        metric=metric,
        n_seeds=n,
        seeds=p.seeds,
        auc_diff=auc_diff,
        auc_ci=auc_ci,
        verdict=verdict,
        rounds=rounds,
        labels_saved=bootstrap_labels_saved(p, resamples=resamples, seed=seed),
    )


def _saved_on_means(
    acc: np.ndarray, labeled: np.ndarray, ref_acc: np.ndarray, ref_labeled: np.ndarray
) -> np.ndarray:
    """Labels saved per row of mean curves ``[B, R]``: the reference's last ``|D_L|`` less where
    the variant first reaches the reference's last accuracy (NaN: never)."""
    return ref_labeled[:, -1] - first_crossings(labeled, acc, ref_acc[:, -1])


def _by_seed(runs: list[dict], variant: str, metric: str) -> dict[str, dict]:
    return {
        str(r["params"]["seed"]): r
        for r in runs
        if r["variant"] == variant
        and r.get("status", "FINISHED") == "FINISHED"
        and r["params"].get("seed") is not None
        and r["history"].get(metric)
    }


def _seed_key(seed: str) -> tuple[int, int | str]:
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


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
    verdicts: list[Verdict] | None = None,
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
    if verdicts:
        lines += [*_verdict_table(verdicts, metric), ""]
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


def _verdict_table(verdicts: list[Verdict], metric: str) -> list[str]:
    references = list(dict.fromkeys(v.reference for v in verdicts))
    one = len(references) == 1
    reference = f"`{references[0]}`" if one else "its reference"
    lines = [
        f"## Verdicts (against {reference}, paired by seed)",
        "",
        f"Each run is paired with {f'the {reference} run' if one else 'its reference'} of the "
        "same seed (the same initial pool), "
        "over the seeds and rounds both finished. AUC: the mean test "
        f"{metric} over rounds 1..R, its difference in {metric} points with a 95% paired t "
        "interval; `better`/`worse` when that interval lies wholly above/below 0. Labels saved: on "
        f"the shared seeds' mean curves, with a 95% bootstrap interval ({BOOTSTRAP_RESAMPLES} "
        f"resamples of the seeds, seed {BOOTSTRAP_SEED}). Fewer than {MIN_SEEDS} shared seeds: "
        "no verdict and no intervals.",
        "",
        "| variant | reference | seeds | AUC difference (points, 95% CI) | labels saved (95% CI) "
        "| verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(
            f"| {v.variant} | {v.reference} | {v.n_seeds} | {_points(v.auc_diff, v.auc_ci)} | "
            f"{_saved_cell(v.labels_saved)} | {v.verdict} |"
        )
    rounds = sorted({d.round for v in verdicts for d in v.rounds})
    if rounds:
        lines += [
            "",
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


def _points(diff: float | None, ci: list[float] | None) -> str:
    if diff is None or not math.isfinite(diff):
        return "-"
    text = f"{100 * diff:+.2f}"
    if ci is not None:
        text += f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    return text


def _saved_cell(saved: dict[str, Any]) -> str:
    of = f"{saved['defined']}/{saved['resamples']} resamples"
    if saved["saved"] is None:
        return f"not reached (reached in {of})" if saved["resamples"] else "not reached"
    text = f"{saved['saved']:.0f}"
    if saved["ci"] is not None:
        return f"{text} [{saved['ci'][0]:.0f}, {saved['ci'][1]:.0f}]"
    return f"{text} (no interval: defined in {of})" if saved["resamples"] else text


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
