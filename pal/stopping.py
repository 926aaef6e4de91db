"""When to stop labeling: the signals both loops log every round, and what stopping would cost.

Three signals, in the spirit of baal's and small-text's stopping criteria:

- **validation plateau** (baal's ``EarlyStoppingCriterion``): the validation metric of the last
  :data:`PATIENCE` + 1 measured rounds moved by less than the noise of measuring it
  (:func:`plateau_threshold`: the standard error of an accuracy on ``n_val`` images, at least
  :data:`EPSILON`), so that 100 validation images do not ask for "exactly unchanged";
- **stabilizing predictions** (Bloodgood & Vijay-Shanker, CoNLL 2009; small-text's
  ``KappaAverage``): Cohen's kappa between this round's and the last round's predictions on a
  fixed stop set (:func:`stop_set`), ``kappa``; the predictions have stabilized when the mean of
  the last :data:`KAPPA_WINDOW` kappas reaches :data:`KAPPA` (:func:`kappa_average`). It needs
  two trained networks, no validation set;
- **confidence** (baal's ``LowAverageUncertaintyStoppingCriterion``, small-text's
  ``OverallUncertainty``): the task network's mean top-class probability on the images the next
  query scores (``mean_confidence``); a high value says the network finds little left that it is
  unsure of. It is there from the first trained network on.

:class:`pal.loop.Experiment` logs them each round (``val_change``, ``val_plateau``, ``kappa``,
``mean_confidence``) and ``pal label`` records them in each round's ``round.json``
(``pal label status`` shows each from the first round it can be computed). In a study, where
every round is measured anyway, :func:`stop_cost` answers what a person who stopped at the
first plateau would have saved (labels) and left on the table (test metric), per strategy:
``pal report``'s table.

They are signals to look at, not a rule: a plateau over few labels can be a slow start.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

PATIENCE = 2
"""Rounds over which the validation metric must stay within :func:`plateau_threshold`."""

EPSILON = 0.005
"""The smallest change of the validation metric that counts as a move (a large validation set's
threshold)."""

KAPPA = 0.99
"""Mean kappa of the last :data:`KAPPA_WINDOW` rounds at which predictions have stabilized
(Bloodgood & Vijay-Shanker's and small-text's default)."""

KAPPA_WINDOW = 3
"""Kappas averaged by :func:`kappa_average`."""

STOP_SET = 2000
"""At most this many pool images (a seeded sample, fixed for the pool) carry the kappa."""


def plateau_threshold(value: float, n_val: int | None) -> float:
    """The change of a validation accuracy ``value`` measured on ``n_val`` images that is within
    its noise: the standard error ``sqrt(p (1 - p) / n_val)``, at least :data:`EPSILON`
    (``n_val`` unknown: :data:`EPSILON`). On 100 images at 0.9 it is 0.03, three images."""
    if not n_val or math.isnan(value):
        return EPSILON
    p = min(max(float(value), 0.0), 1.0)
    return max(EPSILON, math.sqrt(p * (1.0 - p) / n_val))


@dataclasses.dataclass(frozen=True)
class Plateau:
    """The validation plateau signal after a round.

    Attributes:
        fired: 1.0 when the last ``PATIENCE + 1`` measured values span less than
            ``threshold``, 0.0 when not, NaN with fewer measured rounds.
        change: the last measured value less the one ``PATIENCE`` measured rounds before (with
            fewer, less the first measured; NaN with one or none).
        threshold: :func:`plateau_threshold` of the last measured value.
        measured: the rounds that measured a value.
    """

    fired: float
    change: float
    threshold: float = EPSILON
    measured: int = 0

    @property
    def known(self) -> bool:
        return not math.isnan(self.fired)


def plateau(curve: Sequence[float], n_val: int | None = None) -> Plateau:
    """The :class:`Plateau` signal of a validation ``curve`` (one value per round, NaN for a
    round that measured none: left out) measured on ``n_val`` images (:func:`plateau_threshold`;
    ``None``: :data:`EPSILON`)."""
    measured = [float(v) for v in curve if not math.isnan(float(v))]
    if not measured:
        return Plateau(math.nan, math.nan)
    threshold = plateau_threshold(measured[-1], n_val)
    last = measured[-(PATIENCE + 1) :]
    change = last[-1] - last[0] if len(last) > 1 else math.nan
    if len(measured) <= PATIENCE:
        return Plateau(math.nan, change, threshold, len(measured))
    return Plateau(float(max(last) - min(last) < threshold), change, threshold, len(measured))


def first_plateau(curve: Sequence[float], n_val: int | None = None) -> int | None:
    """The first position of ``curve`` at which :func:`plateau` fires (``None``: never)."""
    for r in range(len(curve)):
        if plateau(curve[: r + 1], n_val).fired == 1.0:
            return r
    return None


def stop_set(pool: np.ndarray, seed: int) -> np.ndarray:
    """The stop set of a pool of dataset indices ``pool`` (``int64 [P]``): a sample of at most
    :data:`STOP_SET` of them, sorted, drawn from ``(seed, "stop-set")`` and so the same every
    round of one pool."""
    from pal.rng import numpy_rng

    pool = np.sort(np.asarray(pool, dtype=np.int64))
    if len(pool) <= STOP_SET:
        return pool
    rng = numpy_rng(seed, "stop-set")
    return np.sort(rng.choice(pool, STOP_SET, replace=False))


def cohen_kappa(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa between two labelings ``a``, ``b`` (``int [N]`` class ids) of the same
    images: ``(p_o - p_e) / (1 - p_e)``, 1.0 where both put every image in one class alike (NaN
    for no image)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if len(a) == 0:
        return math.nan
    observed = float(np.mean(a == b))
    pa = np.bincount(a, minlength=num_classes) / len(a)
    pb = np.bincount(b, minlength=num_classes) / len(b)
    expected = float(pa @ pb)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


@dataclasses.dataclass(frozen=True)
class KappaAverage:
    """The stabilizing-predictions signal after a round.

    Attributes:
        fired: 1.0 when the mean of the last :data:`KAPPA_WINDOW` kappas is at least
            :data:`KAPPA`, 0.0 when not, NaN with fewer kappas.
        mean: that mean (with fewer kappas, the mean of those there are; NaN with none).
    """

    fired: float
    mean: float


def kappa_average(kappas: Sequence[float]) -> KappaAverage:
    """:class:`KappaAverage` of the per-round kappas (NaN: a round with none, left out)."""
    known = [float(k) for k in kappas if not math.isnan(float(k))]
    if not known:
        return KappaAverage(math.nan, math.nan)
    mean = float(np.mean(known[-KAPPA_WINDOW:]))
    if len(known) < KAPPA_WINDOW:
        return KappaAverage(math.nan, mean)
    return KappaAverage(float(mean >= KAPPA), mean)


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
    n_val: int | None = None,
) -> StopCost:
    """:class:`StopCost` of runs given per run, per round: the validation metric (the signal,
    measured on ``n_val`` images), the test metric and the labels ``|D_L|``."""
    stops, saved, left = [], [], []
    finals = []
    for v, t, n in zip(val, test, labels, strict=True):
        last = len(n) - 1
        finals.append(float(n[last]))
        r = first_plateau(v, n_val)
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
