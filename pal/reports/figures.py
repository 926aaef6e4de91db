"""A study's figures as PNGs (matplotlib, imported only when a figure is drawn).

:func:`plot_curves`: each variant's mean and a ±1 sample std band against percent labeled (or
``|D_L|``, or query rounds), one colour of :data:`COLORS` per variant (Figures 1 to 5);
:func:`plot_paired_differences`: each variant's mean paired difference to its reference in
points with its 95% t band, against percent labeled.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pal.reports.aggregate import Curve
from pal.verdicts import Verdict

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
