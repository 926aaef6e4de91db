"""A study's runs (plain dicts, as :func:`pal.tracking.load_study` returns them) aggregated.

:func:`curves`: per variant, a metric's mean and sample std over its runs at every round
(:class:`Curve`, arrays ``[R]``; Figures 1, 2, 4 and 5, and with :func:`with_missing_share` the
share of each query from the classes missing at the start, Figure 3 right); :func:`correlations`:
``S_S``-``S_C`` Pearson and Spearman per dataset and variant (Table 1); :func:`round_seconds`,
:func:`code_versions`, :func:`reference_variant` and :func:`study_metric`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pal.stopping import StopCost, stop_cost
from pal.verdicts import column_nanmean, metric_matrix, percent_labeled
from pal.vocabulary import QUERY_CLASS_RATE

REFERENCE = "random"  # the variant every other is compared with, unless a study has pairs


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
    keys = [f"{QUERY_CLASS_RATE}{name}" for name in missing]
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


def study_metric(runs: list[dict[str, Any]]) -> str:
    """What the runs' ``test_accuracy`` holds: ``mIoU`` for segmentation runs (they log
    ``test_miou``), else ``accuracy``."""
    return "mIoU" if any("test_miou" in r["history"] for r in runs) else "accuracy"


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


def stopping_costs(runs: list[dict]) -> list[StopCost]:
    """Per variant, what stopping at the first validation plateau would have cost
    (:func:`pal.stopping.stop_cost` on each run's ``val_accuracy``, ``test_accuracy`` and
    ``n_labeled`` by round); variants without a validation curve are left out."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == variant and r["history"].get("val_accuracy")]
        if not group:
            continue
        rows = {m: [] for m in ("val_accuracy", "test_accuracy", "n_labeled")}
        for run in group:
            rounds = sorted(run["history"]["val_accuracy"])
            for metric, values in rows.items():
                values.append(metric_matrix([run], metric, rounds)[0])
        n_val = _int(group[0]["params"].get("val_size"))
        out.append(stop_cost(variant, *rows.values(), n_val=n_val))
    return out


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
