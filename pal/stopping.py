"""When to stop labeling: the signals both loops log every round, and what stopping would cost.

Two signals, in the spirit of baal's and small-text's stopping criteria:

- **validation plateau** (baal's ``EarlyStoppingCriterion``): the validation metric of the last
  :data:`PATIENCE` + 1 measured rounds moved by less than :data:`EPSILON` (:func:`plateau`);
- **confidence** (baal's ``LowAverageUncertaintyStoppingCriterion``): the task network's mean
  top-class probability on the images the next query scores (``mean_confidence``); a high
  value says the network finds little left that it is unsure of.

:class:`pal.loop.Experiment` logs both each round (``val_change``, ``val_plateau``,
``mean_confidence``) and ``pal label`` records them in each round's ``round.json``
(``pal label status`` shows them). In a study, where every round is measured anyway,
:func:`stopping_costs` answers what a person who stopped at the first plateau would have
saved (labels) and left on the table (test metric), per strategy: ``pal report``'s table.

They are signals to look at, not a rule: a plateau over few labels can be a slow start.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

PATIENCE = 2
"""Rounds over which the validation metric must stay within :data:`EPSILON`."""

EPSILON = 0.005
"""The change of the validation metric below which it counts as a plateau."""


@dataclasses.dataclass(frozen=True)
class Plateau:
    """The validation plateau signal after a round.

    Attributes:
        fired: 1.0 when the last ``PATIENCE + 1`` measured values span less than ``EPSILON``,
            0.0 when not, NaN with fewer measured rounds.
        change: the last measured value less the one ``PATIENCE`` measured rounds before (NaN
            with fewer).
    """

    fired: float
    change: float

    @property
    def known(self) -> bool:
        return not math.isnan(self.fired)


def plateau(curve: Sequence[float]) -> Plateau:
    """The :class:`Plateau` signal of a validation ``curve`` (one value per round, NaN for a
    round that measured none: left out)."""
    measured = [float(v) for v in curve if not math.isnan(float(v))]
    if len(measured) <= PATIENCE:
        return Plateau(math.nan, math.nan)
    last = measured[-(PATIENCE + 1) :]
    return Plateau(float(max(last) - min(last) < EPSILON), last[-1] - last[0])


def first_plateau(curve: Sequence[float]) -> int | None:
    """The first position of ``curve`` at which :func:`plateau` fires (``None``: never)."""
    for r in range(len(curve)):
        if plateau(curve[: r + 1]).fired == 1.0:
            return r
    return None


@dataclasses.dataclass(frozen=True)
class StopCost:
    """What stopping at the first plateau would have cost, over the runs of one variant.

    Attributes:
        variant: the strategy (or variant) of the runs.
        runs: runs measured; ``fired``: those whose signal fired before their last round.
        stop_labels: mean labels at the stop, over the runs that fired (NaN: none fired).
        final_labels: mean labels at the last round, over all runs.
        labels_saved: mean labels a person would not have labeled (0 for a run that never
            fired: it labels to the end), over all runs.
        metric_left: mean final test metric less the test metric at the stop (0 for a run that
            never fired), over all runs: what stopping left on the table.
        metric_left_max: the largest of those differences.
    """

    variant: str
    runs: int
    fired: int
    stop_labels: float
    final_labels: float
    labels_saved: float
    metric_left: float
    metric_left_max: float


def stop_cost(
    variant: str,
    val: Sequence[Sequence[float]],
    test: Sequence[Sequence[float]],
    labels: Sequence[Sequence[float]],
) -> StopCost:
    """:class:`StopCost` of runs given per run, per round: the validation metric (the signal),
    the test metric and the labels ``|D_L|``."""
    stops, saved, left = [], [], []
    finals = []
    for v, t, n in zip(val, test, labels, strict=True):
        last = len(n) - 1
        finals.append(float(n[last]))
        r = first_plateau(v)
        if r is None or r >= last:
            saved.append(0.0)
            left.append(0.0)
            continue
        stops.append(float(n[r]))
        saved.append(float(n[last] - n[r]))
        left.append(float(t[last] - t[r]))
    return StopCost(
        variant,
        len(finals),
        len(stops),
        float(np.mean(stops)) if stops else math.nan,
        float(np.mean(finals)) if finals else math.nan,
        float(np.mean(saved)) if saved else math.nan,
        float(np.mean(left)) if left else math.nan,
        float(np.max(left)) if left else math.nan,
    )
