"""Coverage of labels-saved intervals on simulated paired learning curves (MNIST-like studies).

    python -m benchmarks.labels_saved_coverage                 # 4000 studies per row
    python -m benchmarks.labels_saved_coverage --studies 1000  # quicker, noisier
    python -m benchmarks.labels_saved_coverage --out benchmarks/results

Each simulated study has ``n`` seeds; a seed is one run of the variant and one of the
reference (``random``) from the same initial pool. ``|D_L|`` is 190 at round 0, then queries
of 95. The reference's true curve is ``1 - 0.07 (x / 190)^-0.9`` (0.930 at 190, 0.963 at 380,
0.977 at 665: concave, increasing); a variant worth ``kappa`` times the reference's labels
after the initial pool has the curve ``f(190 + kappa (x - 190))``. A run's accuracy at round
``r`` is its curve plus the seed's offset ``a * 0.7^r`` (shared by the pair; round 0, the
shared initial pool, is the same run for both), plus, for the variant, the seed's own effect
``h * r / R``, plus per-run noise; in the ``failed runs`` scenario 5% of the (run, round)
results lose 2 more points. The truth is labels saved on the population mean curves
(:mod:`pal.labels_saved`), computed by the module's own :func:`first_crossings`.

Candidates, at nominal 95%:

- ``pct drop``: the percentile bootstrap over seeds on the mean curves (2000 resamples, seed
  0) that drops the resamples where the variant never reaches the target and gives no interval
  when under 95% of them reach it; its coverage counts only the studies with an interval
  (``shown``);
- ``pct``: the same resamples, a resample that never reaches the target counting as ``-inf``
  ("not reached");
- ``BCa``: bias-corrected and accelerated bootstrap on those resamples (jackknife
  acceleration, 0 when a leave-one-out curve never reaches the target);
- ``t seeds``: a t interval over the seeds' own labels saved (each seed's variant run against
  the same seed's reference), lower bound "not reached" when a seed never reaches its target;
- ``inverted t``: :func:`pal.labels_saved.labels_saved_arrays`, the paired t test inverted
  (the report's interval).

An interval covers when ``low <= truth <= high``, "not reached" being ``-inf``. ``not reached``
columns: the share of studies whose point estimate, and whose ``inverted t`` lower bound, is
"not reached"; widths are means over the intervals with two numeric bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import norm, t

from pal.labels_saved import (
    CONFIDENCE,
    NOT_REACHED,
    first_crossings,
    labels_saved_arrays,
    paired_labels_saved,
)

X0, QUERY = 190.0, 95.0
RESAMPLES, BOOTSTRAP_SEED = 2000, 0
MIN_DEFINED_SHARE = 0.95
METHODS = ("pct drop", "pct", "BCa", "t seeds", "inverted t")
CHUNK = 250  # studies per bootstrap batch: [CHUNK, RESAMPLES, rounds] floats


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One kind of comparison; accuracies in points (``sd_seed``: the seed's offset at round 0,
    ``sd_run``: per-run noise, ``sd_effect``: the seed-to-seed spread of the variant's gain)."""

    name: str
    kappa: float
    rounds: int  # query rounds R
    sd_seed: float = 0.4
    sd_run: float = 0.4
    sd_effect: float = 0.3
    failed_share: float = 0.0
    failed_loss: float = 2.0


SCENARIOS = (
    Scenario("better, kappa 2, R=2", 2.0, 2),
    Scenario("better, kappa 1.5, R=5", 1.5, 5),
    Scenario("better, kappa 1.5, R=2, sd 0.2", 1.5, 2, sd_seed=0.15, sd_run=0.15, sd_effect=0.1),
    Scenario("barely, kappa 1.05, R=3", 1.05, 3),
    Scenario("equal, R=3, sd 0.8", 1.0, 3, sd_run=0.7),
    Scenario("worse, kappa 0.7, R=3", 0.7, 3),
    Scenario("better, kappa 1.5, R=3, failed runs", 1.5, 3, failed_share=0.05),
)


def true_curve(x: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Population mean accuracy at ``|D_L| = x`` of a strategy worth ``kappa`` random labels."""
    return 1 - 0.07 * ((X0 + kappa * (x - X0)) / X0) ** -0.9


def labeled(s: Scenario) -> np.ndarray:
    """``|D_L|`` per round, ``[R + 1]``."""
    return X0 + QUERY * np.arange(s.rounds + 1)


def truth(s: Scenario) -> float:
    """Labels saved on the population mean curves (``-inf``: never reached)."""
    x = labeled(s)
    needed = first_crossings(x, true_curve(x, s.kappa), true_curve(x[-1]))
    return float(x[-1] - needed)


def simulate(
    s: Scenario, n: int, studies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``studies`` studies of ``n`` seeds: variant and reference accuracy ``[studies, n, R+1]``
    and ``|D_L|`` of the same shape (the same for both)."""
    x = labeled(s)
    r = np.arange(s.rounds + 1)
    shape = (studies, n, s.rounds + 1)
    seed = rng.normal(0, s.sd_seed, (studies, n, 1)) * 0.7**r  # shared by the pair
    effect = rng.normal(0, s.sd_effect, (studies, n, 1)) * r / s.rounds

    def noise() -> np.ndarray:
        e = rng.normal(0, s.sd_run, shape)
        return e - s.failed_loss * (rng.random(shape) < s.failed_share)

    ref = true_curve(x) + (seed + noise()) / 100
    var = true_curve(x, s.kappa) + (seed + effect + noise()) / 100
    var[..., 0] = ref[..., 0]  # round 0: the shared initial pool, one run
    return var, np.broadcast_to(x, shape).copy(), ref


def bootstrap_intervals(
    var: np.ndarray, x: np.ndarray, ref: np.ndarray, level: float = CONFIDENCE
) -> dict[str, np.ndarray]:
    """``pct drop``, ``pct`` and ``BCa`` bounds ``[studies, 2]`` (``pct drop``: NaN without an
    interval) from the same resamples of the seeds for every study (as a report draws them)."""
    studies, n, _ = var.shape
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(RESAMPLES, n))
    weights = np.zeros((RESAMPLES, n))
    np.add.at(weights, (np.arange(RESAMPLES)[:, None], idx), 1.0 / n)
    tail = (1 - level) / 2
    out = {m: np.full((studies, 2), math.nan) for m in ("pct drop", "pct", "BCa")}
    for lo in range(0, studies, CHUNK):
        v, xs, rf = var[lo : lo + CHUNK], x[lo : lo + CHUNK], ref[lo : lo + CHUNK]
        boot = _saved_on_means(
            np.einsum("bn,knr->kbr", weights, v),
            np.einsum("bn,knr->kbr", weights, xs),
            rf[..., -1] @ weights.T,
            xs[..., -1] @ weights.T,
        )  # [chunk, RESAMPLES], -inf: never reached
        defined = np.isfinite(boot)
        finite = np.where(defined, boot, math.nan)
        with warnings.catch_warnings():  # a study no resample defines: NaN, no interval
            warnings.simplefilter("ignore", RuntimeWarning)
            drop = np.nanquantile(finite, [tail, 1 - tail], axis=1).T
        shown = defined.mean(axis=1) >= MIN_DEFINED_SHARE
        out["pct drop"][lo : lo + CHUNK] = np.where(shown[:, None], drop, math.nan)
        out["pct"][lo : lo + CHUNK] = _quantiles(boot, np.array([tail, 1 - tail]))
        out["BCa"][lo : lo + CHUNK] = _bca(boot, v, xs, rf, tail)
    return out


def _saved_on_means(y: np.ndarray, x: np.ndarray, target: np.ndarray, total: np.ndarray):
    return total - first_crossings(x, y, target)


def _quantiles(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles ``q`` (``[..., 2]`` or ``[2]``) of each row of
    ``values`` ``[studies, B]``; a quantile that touches a ``-inf`` is ``-inf``."""
    ordered = np.sort(values, axis=1)
    pos = np.broadcast_to(q, (len(values), 2)) * (values.shape[1] - 1)
    below, frac = np.floor(pos).astype(int), pos - np.floor(pos)
    above = np.minimum(below + 1, values.shape[1] - 1)
    a, b = np.take_along_axis(ordered, below, 1), np.take_along_axis(ordered, above, 1)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(a) & np.isfinite(b), a + frac * (b - a), -math.inf)


def _bca(boot: np.ndarray, v: np.ndarray, x: np.ndarray, rf: np.ndarray, tail: float):
    studies, n, _ = v.shape
    keep = ~np.eye(n, dtype=bool)  # leave-one-out
    jack = _saved_on_means(
        np.stack([v[:, k].mean(axis=1) for k in keep], axis=1),
        np.stack([x[:, k].mean(axis=1) for k in keep], axis=1),
        np.stack([rf[:, k, -1].mean(axis=1) for k in keep], axis=1),
        np.stack([x[:, k, -1].mean(axis=1) for k in keep], axis=1),
    )  # [studies, n]
    point = _saved_on_means(v.mean(1), x.mean(1), rf[:, :, -1].mean(1), x[:, :, -1].mean(1))
    half = 0.5 / boot.shape[1]
    share = np.clip((boot < point[:, None]).mean(axis=1), half, 1 - half)
    z0 = norm.ppf(share)
    with np.errstate(invalid="ignore"):
        dev = jack.mean(axis=1, keepdims=True) - jack
        accel = (dev**3).sum(1) / (6 * ((dev**2).sum(1)) ** 1.5)
    accel = np.where(np.isfinite(accel), accel, 0.0)
    zq = norm.ppf([tail, 1 - tail])[None, :]
    q = norm.cdf(z0[:, None] + (z0[:, None] + zq) / (1 - accel[:, None] * (z0[:, None] + zq)))
    bounds = _quantiles(boot, q)
    # a point estimate that never reaches the target: the percentile interval, low "not reached"
    plain = _quantiles(boot, np.array([tail, 1 - tail]))
    plain[:, 0] = -math.inf
    return np.where(np.isfinite(point)[:, None], bounds, plain)


def per_seed_t(var: np.ndarray, x: np.ndarray, ref: np.ndarray, level: float = CONFIDENCE):
    """``t seeds`` bounds ``[studies, 2]``: mean ± t sd / sqrt(n) of the seeds' own labels
    saved; a seed that never reaches its target makes the lower bound ``-inf`` and the upper
    bound the t bound over the other seeds (``-inf`` with fewer than 2 of them)."""
    saved = x[..., -1] - first_crossings(x, var, ref[..., -1])  # [studies, n]
    ok = np.isfinite(saved)
    k = ok.sum(axis=1)
    vals = np.where(ok, saved, 0.0)
    mean = vals.sum(1) / np.maximum(k, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(((vals - mean[:, None]) ** 2 * ok).sum(1) / (k - 1))
        half = t.ppf((1 + level) / 2, k - 1) * sd / np.sqrt(k)
    all_ok = k == var.shape[1]
    low = np.where(all_ok, mean - half, -math.inf)
    high = np.where(k >= 2, mean + half, -math.inf)
    return np.stack([low, high], axis=1)


def run_row(s: Scenario, n: int, studies: int, seed: int) -> dict:
    """Coverage, share shown, "not reached" shares and mean widths for one scenario and ``n``."""
    rng = np.random.default_rng([seed, n, SCENARIOS.index(s)])
    var, x, ref = simulate(s, n, studies, rng)
    theta = truth(s)
    start = time.perf_counter()
    chosen = labels_saved_arrays(var, x, ref, x)  # what a report runs, per study
    seconds = time.perf_counter() - start
    bounds = {
        **bootstrap_intervals(var, x, ref),
        "t seeds": per_seed_t(var, x, ref),
        "inverted t": np.stack([chosen.low, chosen.high], axis=1),
    }
    row = {"scenario": s.name, "n": n, "truth": _truth(theta), "studies": studies}
    for m in METHODS:
        b = bounds[m]
        shown = ~np.isnan(b).any(axis=1)
        covers = (b[shown, 0] <= theta) & (theta <= b[shown, 1])
        finite = shown & np.isfinite(b).all(axis=1)
        row[m] = {
            "coverage": float(covers.mean()) if shown.any() else None,
            "shown": float(shown.mean()),
            "width": float((b[finite, 1] - b[finite, 0]).mean()) if finite.any() else None,
        }
    row["point not reached"] = float(np.isinf(chosen.saved).mean())
    row["low not reached"] = float(np.isinf(chosen.low).mean())
    row["seconds per study"] = seconds / studies
    return row


def markdown(rows: list[dict]) -> str:
    head = "| n | scenario | truth | " + " | ".join(METHODS) + " | not reached: point / low |"
    lines = [
        "Coverage at nominal 95% (`pct drop`: among the studies it gives an interval, shown %)",
        "",
        head,
        "| --- " * (len(METHODS) + 4) + "|",
    ]
    for r in rows:
        cells = []
        for m in METHODS:
            c = r[m]
            text = "-" if c["coverage"] is None else f"{100 * c['coverage']:.1f}"
            if c["shown"] < 1:
                text += f" ({100 * c['shown']:.0f}%)"
            cells.append(text)
        lines.append(
            f"| {r['n']} | {r['scenario']} | {r['truth']} | "
            + " | ".join(cells)
            + f" | {100 * r['point not reached']:.1f}% / {100 * r['low not reached']:.1f}% |"
        )
    lines += ["", "Mean width (labels), over the intervals with two numeric bounds", ""]
    lines += ["| n | scenario | " + " | ".join(METHODS) + " |", "| --- " * (len(METHODS) + 2) + "|"]
    for r in rows:
        cells = ["-" if r[m]["width"] is None else f"{r[m]['width']:.0f}" for m in METHODS]
        lines.append(f"| {r['n']} | {r['scenario']} | " + " | ".join(cells) + " |")
    lines += ["", "Lowest coverage over the scenarios", ""]
    lines += ["| n | " + " | ".join(METHODS) + " |", "| --- " * (len(METHODS) + 1) + "|"]
    for n in dict.fromkeys(r["n"] for r in rows):
        cells = []
        for m in METHODS:
            cov = [r[m]["coverage"] for r in rows if r["n"] == n and r[m]["coverage"] is not None]
            cells.append(f"{100 * min(cov):.1f}" if cov else "-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timing(rows: list[dict], seed: int) -> str:
    """How long the report's own calls take: the batch function per simulated study, and
    :func:`paired_labels_saved` (one comparison, as a report makes it) on 10-seed studies."""
    batched = max(r["seconds per study"] for r in rows)
    var, x, ref = simulate(SCENARIOS[1], 10, 200, np.random.default_rng(seed))
    start = time.perf_counter()
    for i in range(len(var)):
        paired_labels_saved(var[i], x[i], ref[i], x[i])
    one = (time.perf_counter() - start) / len(var)
    return (
        f"`labels_saved_arrays`: at most {1e6 * batched:.1f} µs per study (batched); "
        f"`paired_labels_saved`: {1e3 * one:.2f} ms per comparison (10 seeds, 6 rounds).\n"
    )


def _truth(theta: float) -> str:
    return NOT_REACHED if math.isinf(theta) else f"{theta:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000, help="simulated studies per row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--seed", type=int, default=0, help="the simulation's random seed")
    parser.add_argument("--out", type=Path, help="also write labels_saved_coverage.md/.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [run_row(s, n, args.studies, args.seed) for n in args.seeds for s in SCENARIOS]
    text = markdown(rows) + "\n" + timing(rows, args.seed)
    text += f"\n{args.studies} studies per row, seed {args.seed}, "
    text += f"{time.perf_counter() - start:.0f} s in all.\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "labels_saved_coverage.md").write_text(text)
        (args.out / "labels_saved_coverage.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
