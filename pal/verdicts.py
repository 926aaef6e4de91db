"""A study's verdicts: every variant against its reference, paired by seed, decided as a family.

A seed is the same initial pool for every variant, so a variant's run and its reference's run of
the same seed are a pair. A comparison's summary is the AUC, a run's mean metric over the query
rounds 1..R; its data are the per-seed AUC differences. The family is every comparison a report
makes (each variant against ``random``, or against its own reference with a study's ``pairs``),
and its family-wise error rate is held at ``alpha`` by Holm's procedure unless the report says
``correction: none`` (:mod:`pal.stats`). A study grown with ``pal ablate --until-decided`` is
decided by its group-sequential design instead of one fixed-sample test.

No verdict is given from data that cannot carry one, and the reason is said: fewer than
:data:`MIN_SEEDS` shared seeds, a non-finite metric, a round one side lacks, rounds whose
labeled counts differ between the two sides, or per-seed differences with zero variance (a
degenerate interval). Rounds whose networks underfit their training set are flagged by name.

Everything here works on plain data (:func:`pal.tracking.load_study`'s dicts).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from pal import stats
from pal.labels_saved import paired_labels_saved

MIN_SEEDS = 3  # fewer shared seeds than this: no verdict and no intervals
CONFIDENCE = 0.95
DEFAULT_EFFECT = 0.01  # the effect the seeds-needed column is for: 1 point of the metric
NO_VERDICT = f"no verdict (fewer than {MIN_SEEDS} shared seeds)"
ZERO_SPREAD = 1e-12  # per-seed differences closer than this (relative) have zero variance
DEGENERATE = "no verdict (zero variance"  # how the reason of a degenerate interval begins
_SHOWN_PROBLEMS = 3  # a reason names at most this many problems and counts the rest


@dataclasses.dataclass
class Paired:
    """A variant's and the reference's runs matched by seed: arrays are ``[seeds, rounds]``
    over the seeds both have a finished run for and every round any of those runs logged (NaN
    where a run lacks one). ``problems`` says what keeps the pairs from a verdict (a missing
    round, a non-finite value, labeled counts that differ), ``[]`` when nothing does."""

    seeds: list[str]
    rounds: np.ndarray  # [R]
    variant: np.ndarray  # the metric
    reference: np.ndarray
    variant_labeled: np.ndarray  # |D_L|
    reference_labeled: np.ndarray
    percent: np.ndarray  # the variant's percent labeled (NaN when the pool size is unknown)
    problems: list[str] = dataclasses.field(default_factory=list)
    underfit: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> np.ndarray:
        """The rounds ``[R]`` (bool) every pair has a finite value of on both sides."""
        both = np.isfinite(self.variant) & np.isfinite(self.reference)
        return both.all(axis=0) if len(self.seeds) else np.zeros(len(self.rounds), bool)


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
    """A variant against its reference, paired by seed, one member of the report's family.

    ``auc_diff``: the mean over shared seeds of the paired difference in the area under the
    learning curve (a run's mean metric over rounds 1..R); ``auc_sd``: the per-seed
    differences' sample standard deviation; ``auc_ci``: their 95% paired t interval, for this
    comparison alone (not adjusted for the family). ``p_value``: the paired t test's two-sided
    p-value, or under a sequential ``design`` the repeated p-value over the looks reached;
    ``p_adjusted``: after the family's ``correction`` (``holm`` or ``none``) over
    ``family_size`` comparisons; ``verdict``: ``better`` / ``worse`` when ``p_adjusted <=
    alpha``, else ``no difference detected`` (or, in a sequential study short of its last look,
    ``open (n of M seeds)``), or ``no verdict (...)`` with the reason (``reason``).
    ``detectable_effect``: the smallest AUC difference the comparison detects with 80% power at
    its seeds and spread, at the strictest level the family holds it to (``alpha /
    family_size`` under Holm); ``seeds_needed``: the seeds it would need for ``effect``.
    ``flags``: what a reader must know (a degenerate interval, underfit rounds); ``underfit``:
    the rounds whose networks underfit, named. ``labels_saved``: see
    :func:`pal.labels_saved.paired_labels_saved`.
    """

    variant: str
    reference: str
    metric: str
    n_seeds: int
    seeds: list[str]
    auc_diff: float | None
    auc_ci: list[float] | None
    auc_sd: float | None
    p_value: float | None
    p_adjusted: float | None
    family_size: int
    correction: str
    alpha: float
    verdict: str
    reason: str | None
    detectable_effect: float | None
    effect: float
    seeds_needed: int | None
    rounds: list[RoundDifference]
    labels_saved: dict[str, Any]
    flags: list[str] = dataclasses.field(default_factory=list)
    underfit: list[str] = dataclasses.field(default_factory=list)
    design: dict[str, Any] | None = None
    looks: int | None = None

    @property
    def decided(self) -> bool:
        return self.verdict in ("better", "worse")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paired_verdicts(
    runs: list[dict],
    metric: str,
    reference: str | None,
    *,
    pairs: dict[str, str] | None = None,
    correction: str = "holm",
    alpha: float = stats.ALPHA,
    effect: float = DEFAULT_EFFECT,
    design: stats.SequentialDesign | None = None,
) -> list[Verdict]:
    """Every other variant against ``reference``, paired by seed, decided as one family;
    ``[]`` without a reference. With ``pairs`` (variant -> its own reference, a study's
    ``pairs``), those comparisons instead, for the variants that have runs.

    Only finished runs count. Round 0 (the shared initial pool) is in ``rounds`` but not in the
    AUC. ``correction`` (:data:`pal.stats.CORRECTIONS`) holds the family at ``alpha``;
    ``design``: a study's group-sequential design (``None``: one fixed-sample test each).
    """
    if correction not in stats.CORRECTIONS:
        from pal.config import ConfigError

        raise ConfigError(
            f"correction: must be one of {list(stats.CORRECTIONS)}, got {correction!r}"
        )
    present = list(dict.fromkeys(r["variant"] for r in runs))
    if pairs:
        compared = [(v, ref) for v, ref in pairs.items() if v in present and ref in present]
    elif reference is None:
        return []
    else:
        compared = [(v, reference) for v in present if v != reference]
    paired = [pair_by_seed(runs, v, ref, metric) for v, ref in compared]
    aucs = [_auc_diffs(p) for p in paired]
    reasons = [_reason(p, d) for p, d in zip(paired, aucs, strict=True)]
    tested = [i for i, why in enumerate(reasons) if why is None]
    decisions = dict(
        zip(
            tested,
            stats.decide(
                [aucs[i] for i in tested],
                alpha=alpha,
                correction=correction,
                design=design,
                level=CONFIDENCE,
            ),
            strict=True,
        )
    )
    family = {"family_size": len(tested), "correction": correction, "alpha": alpha}
    level = stats.per_test_level(alpha, len(tested), correction)
    out = []
    for i, ((variant, ref), p, d, why) in enumerate(
        zip(compared, paired, aucs, reasons, strict=True)
    ):
        v = _verdict(p, variant, ref, metric, d, why, decisions.get(i), level, effect, family)
        out.append(v)
        if design is not None:
            v.design = design.to_dict()
            v.looks = design.reached(v.n_seeds)
            if why is None and not v.decided and v.n_seeds < design.looks[-1]:
                v.verdict = f"open ({v.n_seeds} of {design.looks[-1]} seeds)"
    return out


def pair_by_seed(runs: list[dict], variant: str, reference: str, metric: str) -> Paired:
    """``variant``'s and ``reference``'s finished runs matched on the ``seed`` param, over
    every round any of them logged; what keeps them from a verdict goes into ``problems``.

    A seed run twice counts once, with its later run (``load_study`` lists runs by start time).
    """
    ours, theirs = _by_seed(runs, variant, metric), _by_seed(runs, reference, metric)
    seeds = sorted(ours.keys() & theirs.keys(), key=_seed_key)
    sides = ((variant, [ours[s] for s in seeds]), (reference, [theirs[s] for s in seeds]))
    rounds = sorted({s for _, group in sides for r in group for s in r["history"][metric]})
    problems: list[str] = []
    underfit: list[str] = []
    for name, group in sides:
        for seed, run in zip(seeds, group, strict=True):
            logged = run["history"][metric]
            missing = [s for s in rounds if s not in logged]
            if missing:
                problems.append(f"{name} seed {seed} lacks round {_listed(missing)}")
            bad = [s for s, v in sorted(logged.items()) if not math.isfinite(v)]
            if bad:
                problems.append(f"non-finite {metric} in {name} seed {seed} round {_listed(bad)}")
            underfit += _underfit(run, name, seed, rounds)
    a, b = sides[0][1], sides[1][1]
    paired = Paired(
        seeds=seeds,
        rounds=np.asarray(rounds, dtype=int),
        variant=metric_matrix(a, metric, rounds),
        reference=metric_matrix(b, metric, rounds),
        variant_labeled=metric_matrix(a, "n_labeled", rounds),
        reference_labeled=metric_matrix(b, "n_labeled", rounds),
        percent=np.array([percent_labeled(r, rounds) for r in a], dtype=float).reshape(
            len(a), len(rounds)
        ),
        underfit=underfit,
    )
    ours_n, theirs_n = paired.variant_labeled, paired.reference_labeled
    differs = np.isfinite(ours_n) & np.isfinite(theirs_n) & (ours_n != theirs_n)
    for i, j in zip(*np.nonzero(differs), strict=True):
        problems.append(
            f"labeled counts differ in round {rounds[j]} (seed {seeds[i]}: {variant} "
            f"{ours_n[i, j]:.0f}, {reference} {theirs_n[i, j]:.0f})"
        )
    paired.problems = problems
    return paired


def _auc_diffs(p: Paired) -> np.ndarray:
    """Per shared seed, the variant's AUC less the reference's ``[seeds]`` (over the query
    rounds; NaN where a run lacks one)."""
    query = p.rounds >= 1
    if not len(p.seeds) or not query.any():
        return np.full(len(p.seeds), math.nan)
    return p.variant[:, query].mean(axis=1) - p.reference[:, query].mean(axis=1)


def _reason(p: Paired, diffs: np.ndarray) -> str | None:
    """Why ``p`` gets no verdict, or ``None`` when it gets one."""
    if len(p.seeds) < MIN_SEEDS:
        return NO_VERDICT
    if not (p.rounds >= 1).any():
        return "no verdict (no shared query rounds)"
    if p.problems:
        more = len(p.problems) - _SHOWN_PROBLEMS
        shown = "; ".join(p.problems[:_SHOWN_PROBLEMS]) + (f"; {more} more" if more > 0 else "")
        return f"no verdict ({shown})"
    if np.ptp(diffs) <= ZERO_SPREAD * max(1.0, float(np.abs(diffs).max())):
        return (
            f"{DEGENERATE}: every seed's AUC differs by {100 * diffs[0]:+.2f} points; the "
            "interval is degenerate)"
        )
    return None


def _verdict(
    p: Paired,
    variant: str,
    reference: str,
    metric: str,
    diffs: np.ndarray,
    reason: str | None,
    decision: stats.Decision | None,
    level: float,
    effect: float,
    family: dict[str, Any],
) -> Verdict:
    n = len(p.seeds)
    enough = n >= MIN_SEEDS
    complete = p.complete
    diff, low, high = stats.paired_t_interval(
        p.variant[:, complete] - p.reference[:, complete], CONFIDENCE
    )
    rounds = [
        RoundDifference(
            round=int(r),
            n_labeled=float(column_nanmean(p.variant_labeled[:, j])),
            percent_labeled=float(column_nanmean(p.percent[:, j])),
            diff=float(diff[i]),
            ci=[float(low[i]), float(high[i])] if enough else None,
        )
        for i, (j, r) in enumerate((j, r) for j, r in enumerate(p.rounds) if complete[j])
    ]
    test = decision.test if decision else None  # the family's test, when it made one
    if test is None and n and np.isfinite(diffs).all():
        test = stats.paired_t_test(diffs, CONFIDENCE)
    auc_diff = test.mean if test else None
    auc_sd = test.sd if test and n >= 2 else None
    auc_ci = list(test.ci) if test and enough else None
    flags = []
    if reason and reason.startswith(DEGENERATE):
        flags.append("degenerate interval (zero variance)")
    if p.underfit:
        flags.append(f"underfit in {len(p.underfit)} compared round(s)")
    if decision is None:
        verdict = reason or NO_VERDICT
    elif decision.reject:
        verdict = "better" if decision.direction > 0 else "worse"
    else:
        verdict = "no difference detected"
    detectable = needed = None
    if auc_sd is not None and reason is None:
        detectable = stats.detectable_effect(auc_sd, n, level)
        needed = stats.seeds_needed(auc_sd, effect, level)
    return Verdict(
        variant=variant,
        reference=reference,
        metric=metric,
        n_seeds=n,
        seeds=p.seeds,
        auc_diff=auc_diff,
        auc_ci=auc_ci,
        auc_sd=auc_sd,
        p_value=decision.p_value if decision else None,
        p_adjusted=decision.p_adjusted if decision else None,
        **family,
        verdict=verdict,
        reason=reason,
        detectable_effect=detectable,
        effect=effect,
        seeds_needed=needed,
        rounds=rounds,
        labels_saved=paired_labels_saved(
            *(
                (p.variant, p.variant_labeled, p.reference, p.reference_labeled)
                if not p.problems
                else _empty(p)
            )
        ),
        flags=flags,
        underfit=p.underfit,
    )


def _empty(p: Paired) -> tuple[np.ndarray, ...]:
    """No pairs: the labels-saved figure of data that carries no verdict."""
    none = np.zeros((0, len(p.rounds)))
    return none, none, none, none


# ---------------------------------------------------------------------- helpers
def _underfit(run: dict, side: str, seed: str, rounds: list[int]) -> list[str]:
    """``run``'s underfit rounds among ``rounds``, named with the metric's value."""
    out = []
    for word in run.get("underfit") or []:
        step, _, name = word.partition(":")
        if not step.isdigit() or int(step) not in rounds:
            continue
        value = run["history"].get(name, {}).get(int(step))
        shown = f" {value:.3f}" if value is not None and math.isfinite(value) else ""
        out.append(f"{side} seed {seed} round {step}: {name}{shown}")
    return out


def _listed(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps)


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


def metric_matrix(runs: list[dict], metric: str, rounds: list[int]) -> np.ndarray:
    """``[runs, rounds]`` of ``metric``, NaN where a run lacks a round."""
    return np.array(
        [[r["history"].get(metric, {}).get(s, math.nan) for s in rounds] for r in runs],
        dtype=float,
    ).reshape(len(runs), len(rounds))


def percent_labeled(run: dict, rounds: list[int]) -> np.ndarray:
    """Percent labeled per round: the logged metric, else from ``pool_size - val_size``."""
    logged = run["history"].get("percent_labeled")
    if logged:
        return np.array([logged.get(s, math.nan) for s in rounds], dtype=float)
    labeled = np.array([run["history"].get("n_labeled", {}).get(s, math.nan) for s in rounds])
    try:
        pool = int(run["params"]["pool_size"]) - int(run["params"].get("val_size", 0))
    except (KeyError, ValueError, TypeError):  # pool_size None: the whole split
        return np.full(len(rounds), math.nan)
    return 100.0 * labeled / pool


def column_nanmean(a: np.ndarray) -> np.ndarray:
    """The mean of each column of ``a`` ``[rows, columns]`` over its finite rows (NaN, without a
    warning, for a column with none)."""
    with warnings.catch_warnings():  # a round no run has is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)
