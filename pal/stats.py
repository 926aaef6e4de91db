"""The statistics of a study's verdicts: paired t tests, family-wise correction, power, and
group-sequential designs for studies that add seeds until their verdicts are decided.

A comparison is a variant against its reference, paired by seed (the same seed is the same
initial pool): its data are the per-seed differences ``d_i`` of a summary (the AUC), in seed
order. Everything here works on those arrays, so it is tested and simulated without training.

- :func:`paired_t_test`: the two-sided paired t test and interval of one comparison.
- :func:`adjust`: the family's p-values adjusted by Holm's step-down procedure (strong control
  of the family-wise error rate under any dependence, e.g. comparisons sharing a reference) or
  not at all.
- :func:`detectable_effect` / :func:`seeds_needed`: the smallest difference a comparison detects
  with 80% power at its seeds and spread, and the seeds it would need for a stated effect
  (noncentral t).
- :class:`SequentialDesign`: planned looks ``n_1 < ... < n_K`` seeds with an O'Brien-Fleming or
  Pocock boundary. At look ``k`` the paired t statistic is put on the normal scale,
  ``Z_k = Phi^-1(F_{n_k - 1}(T_k))``; the repeated p-value is the chance under the null that
  the boundary statistic ``max_k |Z_k| / f(k)`` over all planned looks reaches the one
  observed so far, ``f(k) = sqrt(n_K / n_k)`` (O'Brien-Fleming) or 1 (Pocock). The null
  distribution of the paired t statistics at the looks does not depend on the differences'
  variance, so it is simulated once per design with a fixed seed. Holm's procedure on
  repeated p-values is the sequentially rejective Holm test for group-sequential designs
  (Maurer & Bretz 2013): the family-wise error rate holds over every look.
- :func:`decide`: a family's verdicts from its per-seed differences, with either design.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

CORRECTIONS = ("holm", "none")
BOUNDARIES = ("obrien_fleming", "pocock")
ALPHA = 0.05
POWER = 0.8
NULL_SIMULATIONS = 200_000
NULL_SEED = 0  # the null simulation's seed: a design's p-values are reproducible


# ---------------------------------------------------------------------- one comparison
@dataclasses.dataclass(frozen=True)
class PairedTest:
    """The two-sided paired t test of per-seed differences ``[n]``: ``mean`` and ``sd``
    (``n - 1`` in the denominator), ``t`` and ``p`` (NaN for ``n < 2`` or ``sd = 0``), and the
    ``level`` interval ``ci`` (NaN bounds for ``n < 2``)."""

    n: int
    mean: float
    sd: float
    t: float
    p: float
    ci: tuple[float, float]


def paired_t_interval(
    diffs: np.ndarray, level: float = 1 - ALPHA
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


def paired_t_test(diffs: Sequence[float], level: float = 1 - ALPHA) -> PairedTest:
    """The two-sided paired t test of ``diffs`` ``[n]`` against 0, and its interval."""
    from scipy.stats import t as student

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    mean, low, high = (float(v) for v in paired_t_interval(d, level))
    if n < 2:
        return PairedTest(n, mean, math.nan, math.nan, math.nan, (low, high))
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return PairedTest(n, mean, 0.0, math.nan, math.nan, (low, high))
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n, mean, sd, t, float(2 * student.sf(abs(t), n - 1)), (low, high))


# ---------------------------------------------------------------------- the family
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values ``[m]``: the ``i``-th smallest raw p times
    ``m - i`` (``i`` from 0), made monotone and capped at 1. NaN entries stay NaN and do not
    count in ``m``. Reject where the adjusted p-value is at most the family's level."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust(pvalues: Sequence[float], correction: str) -> np.ndarray:
    """The family's adjusted p-values: ``holm`` (:func:`holm`) or ``none`` (as they are)."""
    if correction == "holm":
        return holm(pvalues)
    if correction == "none":
        return np.asarray(pvalues, dtype=float).copy()
    raise ValueError(f"correction: must be one of {list(CORRECTIONS)}, got {correction!r}")


def per_test_level(alpha: float, family_size: int, correction: str) -> float:
    """The level a single comparison is held to at worst: ``alpha / m`` under Holm (its
    first, strictest step; Bonferroni's level, which Holm never needs more than), ``alpha``
    without correction."""
    return alpha / max(family_size, 1) if correction == "holm" else alpha


# ---------------------------------------------------------------------- power
def power(effect_sd: np.ndarray | float, n: np.ndarray | int, alpha: float) -> np.ndarray:
    """The power of the two-sided paired t test at level ``alpha`` with ``n`` seeds for a true
    mean difference of ``effect_sd`` standard deviations of the per-seed differences."""
    from scipy.stats import nct
    from scipy.stats import t as student

    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = student.ppf(1 - alpha / 2, df)
    ncp = np.abs(np.asarray(effect_sd, dtype=float)) * np.sqrt(n)
    # scipy's nct gives NaN far out in a tail: the near side is then 1, the far side 0
    near = nct.sf(crit, df, ncp)
    near = np.where(np.isnan(near) & (ncp > crit), 1.0, near)
    return near + np.nan_to_num(nct.cdf(-crit, df, ncp), nan=0.0)


def detectable_effect(sd: float, n: int, alpha: float, target_power: float = POWER) -> float | None:
    """The smallest true mean difference the paired t test at level ``alpha`` detects with
    ``target_power`` at ``n`` seeds whose differences have standard deviation ``sd`` (in the
    differences' unit); ``None`` for ``n < 2`` or a non-finite or zero ``sd``."""
    from scipy.optimize import brentq

    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return None
    hi = 1.0
    while power(hi, n, alpha) < target_power:
        hi *= 2
        if hi > 1e6:
            return None
    return float(brentq(lambda e: power(e, n, alpha) - target_power, 0.0, hi, xtol=1e-10)) * sd


def seeds_needed(
    sd: float, effect: float, alpha: float, target_power: float = POWER, most: int = 100_000
) -> int | None:
    """The fewest seeds (at least 2) with which the paired t test at level ``alpha`` detects a
    true mean difference ``effect`` with ``target_power``, for differences of standard
    deviation ``sd``; ``None`` when ``sd`` is not finite or more than ``most`` are needed."""
    if not math.isfinite(sd) or effect <= 0:
        return None
    if sd == 0:
        return 2
    lo, hi = 2, 2
    while power(effect / sd, hi, alpha) < target_power:
        lo, hi = hi, hi * 2
        if hi > most:
            return None
    candidates = np.arange(lo, hi + 1)
    ok = candidates[power(effect / sd, candidates, alpha) >= target_power]
    return int(ok[0])


# ---------------------------------------------------------------------- sequential designs
@dataclasses.dataclass(frozen=True)
class SequentialDesign:
    """Planned looks at ``looks`` seeds (increasing, the first at least 3) with a
    ``boundary`` of :data:`BOUNDARIES`; see the module docstring."""

    looks: tuple[int, ...]
    boundary: str = "obrien_fleming"

    def __post_init__(self) -> None:
        looks = tuple(int(n) for n in self.looks)
        if not looks or looks[0] < 3 or any(b <= a for a, b in zip(looks, looks[1:], strict=False)):
            raise ValueError(f"looks: must be increasing seed counts from 3 on, got {looks}")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary: must be one of {list(BOUNDARIES)}, got {self.boundary!r}")
        object.__setattr__(self, "looks", looks)

    @classmethod
    def planned(
        cls, first: int, batch: int, most: int, boundary: str = "obrien_fleming"
    ) -> SequentialDesign:
        """Looks at ``first``, ``first + batch``, ... seeds and at ``most``, the last batch
        taken up to ``most`` when less than ``batch`` would be left after it."""
        looks = list(range(first, most, batch)) or [first]
        if looks[-1] != most:
            if len(looks) > 1 and most - looks[-1] < batch:
                looks[-1] = most
            else:
                looks.append(most)
        return cls(tuple(looks), boundary)

    @property
    def shape(self) -> np.ndarray:
        """``f(k)`` per look ``[K]``: the boundary at look ``k`` is ``c · f(k)``."""
        n = np.asarray(self.looks, dtype=float)
        if self.boundary == "pocock":
            return np.ones_like(n)
        return np.sqrt(n[-1] / n)

    def to_dict(self) -> dict:
        return {"looks": list(self.looks), "boundary": self.boundary}

    def reached(self, n: int) -> int:
        """How many planned looks ``n`` seeds reach."""
        return int(np.searchsorted(self.looks, n, side="right"))

    def next_look(self, n: int) -> int | None:
        """The seeds of the first planned look after ``n`` seeds (``None``: none is left)."""
        k = self.reached(n)
        return self.looks[k] if k < len(self.looks) else None

    def statistic(self, diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The boundary statistic over the looks that ``n`` seeds reach, for differences
        ``[..., n]`` in seed order: ``max_k |Z_k| / f(k)`` ``[...]`` and the sign of that
        look's mean ``[...]``. NaN where no look is reached or a look has zero variance."""
        d = np.asarray(diffs, dtype=float)
        k = self.reached(d.shape[-1])
        if k == 0:
            return np.full(d.shape[:-1], math.nan), np.zeros(d.shape[:-1], dtype=int)
        n = np.asarray(self.looks[:k])
        t, mean = _t_at(d, n)  # [..., k]
        value = np.abs(t) / self.shape[:k]
        best = np.nanargmax(np.where(np.isnan(value), -np.inf, value), axis=-1)
        pick = np.take_along_axis
        stat = pick(value, best[..., None], axis=-1)[..., 0]
        stat = np.where(np.isnan(value).any(axis=-1), math.nan, stat)
        sign = np.sign(pick(mean, best[..., None], axis=-1)[..., 0]).astype(int)
        return stat, sign

    def p_values(self, statistic: np.ndarray) -> np.ndarray:
        """Repeated p-values ``[...]`` of boundary statistics ``[...]``: the null chance that
        the statistic over all planned looks reaches the one observed at the looks so far
        (the smallest level at which the design would have rejected by now)."""
        null = _null_maxima(self.looks, self.boundary)  # sorted
        s = np.asarray(statistic, dtype=float)
        above = len(null) - np.searchsorted(null, np.nan_to_num(s, nan=np.inf), side="left")
        return np.where(np.isfinite(s), (1 + above) / (1 + len(null)), math.nan)

    def critical_values(self, alpha: float) -> list[float]:
        """The |t| boundary at each look ``[K]`` for a single comparison at level ``alpha``
        (the boundary ``c · f(k)`` on the normal scale, mapped back to ``n_k - 1`` degrees of
        freedom)."""
        from scipy.special import ndtr, stdtrit

        c = float(np.quantile(_null_maxima(self.looks, self.boundary), 1 - alpha))
        z = c * self.shape
        return [float(v) for v in stdtrit(np.asarray(self.looks) - 1, ndtr(z))]


def _t_at(d: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired t statistics on the normal scale, and means, of the first ``n[k]`` differences:
    ``d`` ``[..., N]`` -> ``[..., K]`` each. The statistic is ``Phi^-1(F_{n-1}(t))``: the
    t statistic mapped through its own null distribution, so every look is standard normal
    under the null whatever its seeds (a t with 2 degrees of freedom has far heavier tails
    than one with 9; unmapped, the first look's tail would set every boundary). NaN for zero
    variance."""
    from scipy.special import ndtri, stdtr

    s1 = np.cumsum(d, axis=-1)[..., n - 1]
    s2 = np.cumsum(d * d, axis=-1)[..., n - 1]
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var > 1e-300, mean / np.sqrt(var / n), math.nan)
        z = np.sign(t) * -ndtri(stdtr(n - 1, -np.abs(t)))
    return z, mean


@functools.lru_cache(maxsize=32)
def _null_maxima(looks: tuple[int, ...], boundary: str) -> np.ndarray:
    """``max_k |Z_k| / f(k)`` over the looks for :data:`NULL_SIMULATIONS` null studies
    (standard normal differences; the paired t's null does not depend on their variance),
    sorted."""
    rng = np.random.default_rng(NULL_SEED)
    shape = SequentialDesign(looks, boundary).shape
    n = np.asarray(looks)
    out = np.empty(NULL_SIMULATIONS)
    chunk = 50_000
    for start in range(0, NULL_SIMULATIONS, chunk):
        z = rng.standard_normal((min(chunk, NULL_SIMULATIONS - start), looks[-1]))
        t, _ = _t_at(z, n)
        out[start : start + len(z)] = (np.abs(t) / shape).max(axis=-1)
    out.sort()
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------- a family's verdicts
@dataclasses.dataclass
class Decision:
    """One comparison's outcome in its family.

    ``test``: the fixed-sample paired t test on all its seeds; ``p_value``: the p-value the
    design uses (the t test's, or the repeated p-value of a sequential design); ``p_adjusted``:
    after the family's correction; ``reject``: ``p_adjusted <= alpha``; ``direction``: +1 / -1
    (better / worse) where rejected, else 0; ``looks``: planned looks reached (sequential).
    """

    test: PairedTest
    p_value: float
    p_adjusted: float
    reject: bool
    direction: int
    looks: int | None = None


def decide(
    diffs: Sequence[Sequence[float]],
    *,
    alpha: float = ALPHA,
    correction: str = "holm",
    design: SequentialDesign | None = None,
    level: float = 1 - ALPHA,
) -> list[Decision]:
    """The verdicts of a family of comparisons, one array of per-seed differences each (seed
    order), with ``correction`` over the family and ``design`` (``None``: one fixed-sample
    paired t test each). A comparison without a p-value (fewer than 2 seeds, zero variance,
    no planned look reached) is not rejected and does not count in the family's size."""
    tests = [paired_t_test(d, level) for d in diffs]
    if design is None:
        raw = [t.p for t in tests]
        looks: list[int | None] = [None] * len(tests)
        signs = [int(np.sign(t.mean)) if math.isfinite(t.mean) else 0 for t in tests]
    else:
        raw, signs, looks = [], [], []
        for d in diffs:
            stat, sign = design.statistic(np.asarray(d, dtype=float))
            raw.append(float(design.p_values(stat)))
            signs.append(int(sign))
            looks.append(design.reached(len(d)))
    adjusted = adjust(raw, correction)
    out = []
    for test, p, q, sign, k in zip(tests, raw, adjusted, signs, looks, strict=True):
        reject = bool(math.isfinite(q) and q <= alpha)
        out.append(Decision(test, float(p), float(q), reject, sign if reject else 0, k))
    return out


def simulate_until_decided(
    effects: Sequence[float],
    design: SequentialDesign,
    *,
    sd: float = 1.0,
    shared: float = 0.5,
    alpha: float = ALPHA,
    correction: str = "holm",
    studies: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Monte-Carlo studies of a family run until decided: comparison ``j``'s per-seed
    difference is ``effects[j] + e`` with ``e`` of standard deviation ``sd``, a share
    ``shared`` of its variance common to the family (the shared reference's runs). At each
    planned look every comparison still open (not rejected) gets seeds up to the look and the
    family is decided again (the rule of ``pal ablate --until-decided``: :func:`holm` over the
    repeated p-values of ``design``).

    Returns ``reject`` ``[studies, m]`` (bool), ``direction`` ``[studies, m]`` and ``seeds``
    ``[studies, m]`` (the seeds each comparison ran).
    """
    rng = np.random.default_rng(seed)
    mu = np.asarray(effects, dtype=float)
    m, most = len(mu), design.looks[-1]
    common = rng.standard_normal((studies, 1, most)) * sd * math.sqrt(shared)
    own = rng.standard_normal((studies, m, most)) * sd * math.sqrt(1 - shared)
    d = mu[None, :, None] + common + own
    reject = np.zeros((studies, m), dtype=bool)
    direction = np.zeros((studies, m), dtype=int)
    seeds = np.full((studies, m), design.looks[0])
    stat = np.full((studies, m), math.nan)
    sign = np.zeros((studies, m), dtype=int)
    for n in design.looks:
        open_ = ~reject & (seeds <= n)
        seeds = np.where(open_, n, seeds)
        s, g = design.statistic(d[..., :n])
        stat = np.where(open_, s, stat)  # a decided comparison keeps its last statistic
        sign = np.where(open_, g, sign)
        q = adjust_rows(design.p_values(stat), correction)
        newly = (q <= alpha) & ~reject
        direction = np.where(newly, sign, direction)
        reject |= newly
    return {"reject": reject, "direction": direction, "seeds": seeds}


def adjust_rows(pvalues: np.ndarray, correction: str) -> np.ndarray:
    """:func:`adjust` on each row of ``[studies, m]`` p-values."""
    p = np.asarray(pvalues, dtype=float)
    return np.stack([adjust(row, correction) for row in p]) if len(p) else p
