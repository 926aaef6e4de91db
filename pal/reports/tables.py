"""A study's per-variant tables: markdown curve tables and CSV files.

Round by round, each variant's mean ± sample std over runs as a markdown table (columns headed by
percent labeled when known), the same :class:`~pal.reports.aggregate.Curve` rows as CSV, and the
number formatting the report's tables share.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pal.reports.aggregate import Curve
from pal.stopping import EPSILON, PATIENCE, StopCost


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


def _stopping_table(costs: list[StopCost], metric: str) -> list[str]:
    """Per variant, had a person stopped at the first validation plateau
    (:mod:`pal.stopping`): when, and what it would have cost."""
    lines = [
        "## Had a person stopped at the first validation plateau",
        "",
        f"The signal fires after a round when the validation {metric} of the last "
        f"{PATIENCE + 1} rounds spans less than {EPSILON} (`pal.stopping`). Saved: the labels "
        f"a person would not have made; left: the final test {metric} less the test {metric} "
        "at the stop, in points. A run whose signal never fired before its last round labels "
        "to the end and counts as 0 for both.",
        "",
        "| variant | runs | fired | labels at stop | labels at end | labels saved | "
        f"test {metric} left (points) | worst run (points) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in costs:
        lines.append(
            f"| {c.variant} | {c.runs} | {c.fired} | {_num(c.stop_labels, 0)} | "
            f"{_num(c.final_labels, 0)} | {_num(c.labels_saved, 0)} | "
            f"{_num(100 * c.metric_left, 2)} | {_num(100 * c.metric_left_max, 2)} |"
        )
    return lines
