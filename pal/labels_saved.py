"""Labels saved by a variant against its reference, paired by seed, with a confidence interval.

The estimand. Per round ``r`` (``r = 0..R``, the rounds both runs of every shared seed logged),
let ``mu_v(r)`` and ``mu_ref(r)`` be the population mean test accuracy of the variant and the
reference over seeds (initial pools and training randomness), ``x_r`` the variant's ``|D_L|``
and ``X`` the reference's final ``|D_L|``. ``g(x)`` is ``mu_v`` linear in ``|D_L|`` between
the rounds. The labels the variant needs, ``N``, are the smallest ``x`` in ``[x_0, x_R]`` where
``g(x) >= mu_ref(R)`` (``+inf`` when it never gets there: more labels than the study has), and

    labels saved = X - N          (-inf, printed "not reached", when N = +inf).

The point estimate is the same quantity on the shared seeds' mean curves.

The interval (:func:`labels_saved_arrays`) inverts a paired t test. Per seed ``i``, let
``d_i(x)`` be the variant's accuracy at ``x`` (its own curve, linear between rounds) less the
reference's final accuracy in the run of the same seed. ``N`` is where ``E[d(x)] = 0``; the
interval holds every ``N`` that the two-sided paired t test of ``E[d(N)] = 0`` at level
``1 - CONFIDENCE`` does not reject, plus ``x_0`` when the one-sided test of ``E[d(x_0)] >= 0``
does not reject and ``+inf`` ("not reached") when the one-sided test of ``E[d(x_R)] < 0``
does not reject. Accuracies normal over seeds make ``d_i(N)`` normal, so the test is exact
and so is the coverage, at any number of seeds; the simulated coverage in
:data:`SIMULATED_COVERAGE` (``python -m benchmarks.labels_saved_coverage``) checks it on
realistic paired learning curves, failed runs included. The set is reported as its hull.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer shared seeds than this: a point estimate, no interval
NOT_REACHED = "not reached"
KIND = "CI, paired t test inverted over seeds"
INTERVAL = f"95% {KIND}"

# The interval's coverage at nominal 95% measured by ``python -m benchmarks.labels_saved_coverage``
# (seven scenarios of 4000 simulated studies each, a standard error of 0.35 points): per number
# of seeds, the lowest coverage over the scenarios. A study with n seeds gets the value at the
# largest tabulated n at or below it.
SIMULATED_COVERAGE: dict[int, float] = {3: 0.955, 5: 0.945, 10: 0.945}

DESCRIPTION = (
    "Labels saved: the reference's final |D_L| less the |D_L| at which the variant's mean "
    "curve over the shared seeds (linear in |D_L| between rounds) first reaches the "
    "reference's final mean accuracy; `not reached`: the variant needs more labels than the "
    "study has. Its 95% interval holds every value that a paired t test over seeds (the "
    "variant's accuracy at that |D_L| less the reference's final accuracy in the run of the "
    "same seed) does not reject; `not reached` as a bound means the data cannot rule out that "
    "the variant never reaches the target. In simulated MNIST-like studies of 3, 5 and 10 "
    "seeds (variants better, equal, worse, barely reaching the target; failed runs) it covered "
    f"the true labels saved at least {100 * min(SIMULATED_COVERAGE.values()):.1f}% of the time."
)


class SavedArrays(NamedTuple):
    """:func:`labels_saved_arrays`'s result; every field has the comparisons' shape ``[...]``.

    ``needed`` is ``+inf`` where the variant's mean curve never reaches the target, so
    ``saved`` (``reference_labels - needed``) and a bound that falls there are ``-inf``;
    ``low``/``high`` are NaN where there is no interval (fewer than 2 seeds).
    """

    target: np.ndarray  # the reference's final mean accuracy
    reference_labels: np.ndarray  # the reference's final mean |D_L|
    needed: np.ndarray
    saved: np.ndarray
    low: np.ndarray
    high: np.ndarray


def first_crossings(x: np.ndarray, y: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """The smallest ``x`` where the piecewise-linear ``y(x)`` reaches ``target``, row by row.

    ``x``, ``y``: ``[..., R]`` (``x`` increasing along the last axis), ``target``: ``[...]``
    or a scalar -> ``[...]``; ``x[..., 0]`` where ``y`` starts at or above the target,
    ``+inf`` where it never reaches it (NaN values count as below the target).

    >>> first_crossings(np.array([100.0, 200.0]), np.array([0.5, 1.0]), 0.75)
    array(150.)
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    target = np.asarray(target, dtype=float)
    above = y >= target[..., None]
    i = above.argmax(axis=-1)[..., None]
    prev = np.maximum(i - 1, 0)
    x0, x1 = np.take_along_axis(x, prev, -1)[..., 0], np.take_along_axis(x, i, -1)[..., 0]
    y0, y1 = np.take_along_axis(y, prev, -1)[..., 0], np.take_along_axis(y, i, -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return np.where(above.any(axis=-1), np.where(i[..., 0] == 0, x1, between), math.inf)


def labels_saved_arrays(
    variant: np.ndarray,
    variant_labeled: np.ndarray,
    reference: np.ndarray,
    reference_labeled: np.ndarray,
    *,
    level: float = CONFIDENCE,
) -> SavedArrays:
    """Labels saved and its inverted paired t interval (module docstring) for a batch of
    paired comparisons.

    Every argument is ``[..., seeds, rounds]``: test accuracy and ``|D_L|`` of the variant's
    and the reference's runs, row ``i`` of both from the same seed, round 0 first. The
    variant's curves are interpolated on its mean ``|D_L|`` per round (every seed's, when the
    query size is fixed). Values must be finite. Returns a :class:`SavedArrays` of ``[...]``.
    """
    from scipy.stats import t

    y = np.asarray(variant, dtype=float)
    x = np.asarray(variant_labeled, dtype=float).mean(axis=-2)  # [..., R]
    z = np.asarray(reference, dtype=float)[..., -1]  # [..., n] the reference's final accuracy
    ref_labels = np.asarray(reference_labeled, dtype=float)[..., -1].mean(axis=-1)
    d = y - z[..., None]  # [..., n, R]
    n = d.shape[-2]
    target = z.mean(axis=-1)
    needed = first_crossings(x, y.mean(axis=-2), target)
    if n < 2:
        nan = np.full(needed.shape, math.nan)
        return SavedArrays(target, ref_labels, needed, ref_labels - needed, nan, nan.copy())
    c = t.ppf((1 + level) / 2, n - 1) / math.sqrt(n)
    low_needed, high_needed = _needed_bounds(x, d, c)
    return SavedArrays(
        target=target,
        reference_labels=ref_labels,
        needed=needed,
        saved=ref_labels - needed,
        low=ref_labels - high_needed,
        high=ref_labels - low_needed,
    )


def _needed_bounds(x: np.ndarray, d: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """The hull ``[low, high]`` of the labels needed that the paired t test does not reject.

    ``x``: ``[..., R]`` nodes, ``d``: ``[..., n, R]`` per-seed differences at the nodes,
    ``c``: the t quantile over ``sqrt(n)``. On the segment from node ``k`` to ``k + 1``,
    ``d_i = a_i + b_i u`` (``u`` in ``[0, 1]``), and ``x`` is kept where
    ``mean(d)^2 <= c^2 var(d)``, a quadratic ``A u^2 + 2 B u + C <= 0``: its smallest and
    largest points are among ``u = 0``, ``1``, the roots and the vertex, each checked.
    ``high`` is ``+inf`` where "never reached" is not rejected; ``low`` is ``+inf`` where
    nothing else is left.
    """
    m, sd = d.mean(axis=-2), d.std(axis=-2, ddof=1)  # [..., R]
    start = m[..., 0] + c * sd[..., 0] >= 0  # x_0 (y(x_0) >= target) not rejected
    low = np.where(start, x[..., 0], math.inf)
    high = np.where(start, x[..., 0], -math.inf)
    if x.shape[-1] >= 2:
        a, b = d[..., :-1], np.diff(d, axis=-1)  # [..., n, K] with K = R - 1 segments
        abar, bbar = a.mean(axis=-2), b.mean(axis=-2)  # [..., K]
        ac, bc = a - abar[..., None, :], b - bbar[..., None, :]
        n1 = d.shape[-2] - 1
        saa, sbb, sab = (ac * ac).sum(-2) / n1, (bc * bc).sum(-2) / n1, (ac * bc).sum(-2) / n1
        c2 = c * c
        qa, qb, qc = bbar * bbar - c2 * sbb, abar * bbar - c2 * sab, abar * abar - c2 * saa
        with np.errstate(divide="ignore", invalid="ignore"):
            disc = qb * qb - qa * qc
            q = -(qb + np.copysign(np.sqrt(np.where(disc >= 0, disc, math.nan)), qb))
            u = np.stack(
                [np.zeros_like(qa), np.ones_like(qa), q / qa, qc / q, -qb / qa], axis=-1
            )  # [..., K, 5]
        clipped = np.clip(u, 0.0, 1.0)
        u = np.where(np.abs(u - clipped) <= 1e-12, clipped, math.nan)
        quad = (qa[..., None] * u + 2 * qb[..., None]) * u + qc[..., None]
        tol = 1e-9 * (np.abs(qa) + 2 * np.abs(qb) + np.abs(qc))
        kept = quad <= tol[..., None]  # NaN (no such point) is never kept
        at = x[..., :-1, None] + u * np.diff(x, axis=-1)[..., None]  # [..., K, 5]
        low = np.fmin(low, np.where(kept, at, math.inf).min(axis=(-2, -1)))
        high = np.fmax(high, np.where(kept, at, -math.inf).max(axis=(-2, -1)))
    never = m[..., -1] - c * sd[..., -1] < 0  # y(x_R) < target not rejected
    return low, np.where(never, math.inf, high)


def paired_labels_saved(
    variant: np.ndarray,
    variant_labeled: np.ndarray,
    reference: np.ndarray,
    reference_labeled: np.ndarray,
    *,
    level: float = CONFIDENCE,
) -> dict[str, Any]:
    """Labels saved by a variant against its reference over the seeds both ran (the one figure
    a report shows for the comparison), as a JSON-safe dict.

    Arguments are ``[seeds, rounds]`` (``pal.reports.Paired``'s ``variant``,
    ``variant_labeled``, ``reference``, ``reference_labeled``); a seed with a non-finite value
    is left out. Keys:

    - ``saved``: labels saved (module docstring), ``"not reached"`` when the variant's mean
      curve never reaches the target, ``None`` without seeds or rounds; ``saved_percent``: the
      same as a percent of ``reference_labels``; ``needed``: the labels the variant needs;
    - ``ci``: ``[low, high]``, each a number or ``"not reached"``, or ``None`` (``no_interval``
      says why: fewer than :data:`MIN_SEEDS` seeds); ``ci_percent``: the same in percent;
    - ``interval``: what ``ci`` is (:data:`INTERVAL` at the default level), ``None`` without
      one; ``coverage``: its simulated coverage at this number of seeds
      (:data:`SIMULATED_COVERAGE`, at the default level only), else ``None``;
    - ``n_seeds``, ``level``, ``target`` (the reference's final mean accuracy),
      ``reference_labels`` (its final mean ``|D_L|``).
    """
    arrays = [
        np.asarray(a, dtype=float) for a in (variant, variant_labeled, reference, reference_labeled)
    ]
    if arrays[0].ndim != 2 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("labels saved takes four arrays of one shape [seeds, rounds]")
    finite = np.logical_and.reduce([np.isfinite(a).all(axis=1) for a in arrays])
    arrays = [a[finite] for a in arrays]
    n, rounds = arrays[0].shape
    out: dict[str, Any] = {
        "saved": None,
        "saved_percent": None,
        "needed": None,
        "ci": None,
        "ci_percent": None,
        "interval": None,
        "no_interval": None,
        "coverage": None,
        "n_seeds": int(n),
        "level": level,
        "target": None,
        "reference_labels": None,
    }
    if n == 0 or rounds == 0:
        out["no_interval"] = "no shared seeds" if n == 0 else "no shared rounds"
        return out
    r = labels_saved_arrays(*arrays, level=level)
    total = float(r.reference_labels)
    out.update(
        saved=_value(r.saved),
        saved_percent=_value(100 * r.saved / total),
        needed=_value(r.needed),
        target=float(r.target),
        reference_labels=total,
    )
    if n < MIN_SEEDS:
        out["no_interval"] = f"n < {MIN_SEEDS}"
        return out
    out["ci"] = [_value(r.low), _value(r.high)]
    out["ci_percent"] = [_value(100 * r.low / total), _value(100 * r.high / total)]
    out["interval"] = f"{100 * level:g}% {KIND}"
    out["coverage"] = simulated_coverage(n) if level == CONFIDENCE else None
    return out


def simulated_coverage(n_seeds: int) -> float | None:
    """The interval's simulated coverage at nominal 95% (:data:`SIMULATED_COVERAGE`) for
    ``n_seeds`` seeds: the value at the largest tabulated n at or below it (``None`` below
    the table)."""
    below = [k for k in SIMULATED_COVERAGE if k <= n_seeds]
    return SIMULATED_COVERAGE[max(below)] if below else None


def saved_cell(result: dict[str, Any], percent: bool = False) -> str:
    """A markdown table cell for :func:`paired_labels_saved`'s ``result``.

    ``"40 [5, 67]"``, ``"40 [not reached, 67]"``, ``"not reached [not reached, 12]"``,
    ``"not reached"`` (both bounds too), ``"40 (no interval: n < 3)"``, ``"-"`` (no data);
    with ``percent``, the percents of the reference's labels (``"21.1% [2.6%, 35.3%]"``).
    """
    key, ci_key = ("saved_percent", "ci_percent") if percent else ("saved", "ci")
    point, ci = result[key], result[ci_key]
    if point is None:
        return "-"
    text = _cell_number(point, percent)
    if ci is not None:
        if point == NOT_REACHED and ci == [NOT_REACHED, NOT_REACHED]:
            return NOT_REACHED
        return f"{text} [{_cell_number(ci[0], percent)}, {_cell_number(ci[1], percent)}]"
    if result.get("no_interval"):
        return f"{text} (no interval: {result['no_interval']})"
    return text


def _cell_number(value: float | str, percent: bool) -> str:
    if isinstance(value, str):
        return value
    if percent:
        return f"{round(value, 1) + 0.0:.1f}%"  # + 0.0: no "-0.0"
    return str(round(value))


def _value(a: np.ndarray) -> float | str | None:
    """A 0-d result as a JSON-safe value: infinite (labels saved ``-inf``, labels needed
    ``+inf``) is "not reached", NaN ``None``."""
    v = float(a)
    if math.isnan(v):
        return None
    return v if math.isfinite(v) else NOT_REACHED
