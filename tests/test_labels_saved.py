"""Labels saved, paired by seed: the point estimate on hand-made curves, the inverted paired t
interval against a brute-force test on a grid, "not reached" bounds, its coverage on simulated
studies, JSON-safety and the report's table cells."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import t

from benchmarks.labels_saved_coverage import SCENARIOS, bootstrap_intervals, simulate, truth
from pal.labels_saved import (
    DESCRIPTION,
    INTERVAL,
    MIN_SEEDS,
    NOT_REACHED,
    SIMULATED_COVERAGE,
    first_crossings,
    labels_saved_arrays,
    paired_labels_saved,
    saved_cell,
    simulated_coverage,
)

LABELED = np.array([190.0, 285.0, 380.0])


def study(variant_rows, reference_rows, labeled=LABELED):
    """The four ``[seeds, rounds]`` arrays of a paired comparison from accuracy rows."""
    v, r = np.array(variant_rows, dtype=float), np.array(reference_rows, dtype=float)
    x = np.broadcast_to(labeled, v.shape).copy()
    return v, x, r, x.copy()


def test_first_crossings_interpolates_row_by_row():
    x = np.array([[100.0, 200.0, 300.0], [100.0, 200.0, 300.0], [100.0, 200.0, 300.0]])
    y = np.array([[0.5, 0.7, 0.8], [0.9, 0.95, 0.97], [0.5, 0.6, 0.65]])
    got = first_crossings(x, y, np.array([0.75, 0.8, 0.7]))
    assert got.tolist() == pytest.approx([250.0, 100.0, math.inf])
    # batch dimensions in front, a scalar target
    assert first_crossings(x[None], y[None], 0.75).shape == (1, 3)


def test_point_estimate_is_labels_saved_on_the_seeds_mean_curves():
    # reference finals 0.955, 0.96, 0.965 (mean 0.96); the variant's mean curve is
    # 0.93 -> 0.95 -> 0.97, so it reaches 0.96 half way from 285 to 380: at 332.5 labels
    reference = [[0.93, 0.945, 0.955], [0.92, 0.95, 0.96], [0.94, 0.955, 0.965]]
    variant = [[0.93, 0.948, 0.972], [0.92, 0.95, 0.965], [0.94, 0.952, 0.973]]
    r = paired_labels_saved(*study(variant, reference))
    assert r["needed"] == pytest.approx(332.5)
    assert r["saved"] == pytest.approx(47.5)
    assert r["saved_percent"] == pytest.approx(12.5)
    assert r["target"] == pytest.approx(0.96) and r["reference_labels"] == 380.0
    assert r["n_seeds"] == 3 and r["interval"] == INTERVAL and r["level"] == 0.95
    low, high = r["ci"]
    assert low == NOT_REACHED or low < r["saved"]
    assert r["saved"] < high <= 380 - 190
    assert r["ci_percent"][1] == pytest.approx(100 * high / 380)


def test_the_interval_is_every_value_the_paired_t_test_does_not_reject():
    rng = np.random.default_rng(5)
    grid = np.linspace(190.0, 475.0, 28501)  # 0.01 labels apart
    checked = 0
    for n in (3, 4, 6):
        for _ in range(15):
            base = np.array([0.93, 0.948, 0.958, 0.965])
            ref = base + rng.normal(0, 0.004, (n, 1)) + rng.normal(0, 0.004, (n, 4))
            gain = rng.normal(0.004, 0.004) * np.arange(4) / 3
            var = base + gain + rng.normal(0, 0.004, (n, 4))
            var[:, 0] = ref[:, 0]
            x = np.broadcast_to(190.0 + 95 * np.arange(4), (n, 4))
            got = labels_saved_arrays(var, x, ref, x)
            # the t test at every point of a fine grid, each seed's own curve
            d = np.stack([np.interp(grid, x[0], var[i]) - ref[i, -1] for i in range(n)])
            m, sd = d.mean(0), d.std(0, ddof=1)
            c = t.ppf(0.975, n - 1) / math.sqrt(n)
            kept = np.abs(m) <= c * sd
            kept[0] = m[0] + c * sd[0] >= 0
            high = 475 - grid[kept].min() if kept.any() else -math.inf
            low = -math.inf if m[-1] - c * sd[-1] < 0 else 475 - grid[kept].max()
            assert float(got.high) == pytest.approx(high, abs=0.02)
            assert float(got.low) == pytest.approx(low, abs=0.02)
            if math.isfinite(got.saved):
                assert got.low <= got.saved <= got.high
            checked += math.isfinite(low) + math.isfinite(high)
    assert checked > 40  # numeric bounds were compared, not only "not reached"


def test_a_seed_falling_short_makes_the_lower_bound_not_reached():
    # finals 0.9, 0.9, 0.75, 0.75, 0.75 against 0.8: the mean curve (final 0.81) reaches the
    # target, at 150 + 50 * 0.2 / 0.21 labels, but the data cannot rule out that it does not
    reference = [[0.5, 0.6, 0.8]] * 5
    variant = [[0.5, 0.6, f] for f in (0.9, 0.9, 0.75, 0.75, 0.75)]
    r = paired_labels_saved(*study(variant, reference, np.array([100.0, 150.0, 200.0])))
    assert r["saved"] == pytest.approx(200 - (150 + 50 * 0.2 / 0.21))
    assert r["ci"][0] == NOT_REACHED and r["ci_percent"][0] == NOT_REACHED
    assert r["saved"] < r["ci"][1] < 100
    assert saved_cell(r) == f"{round(r['saved'])} [not reached, {round(r['ci'][1])}]"


def test_a_variant_that_never_reaches_the_target():
    reference = [[0.93, 0.95, 0.965], [0.925, 0.952, 0.966], [0.935, 0.953, 0.964]]
    variant = [[0.93, 0.94, 0.95], [0.925, 0.938, 0.949], [0.935, 0.941, 0.952]]
    r = paired_labels_saved(*study(variant, reference))
    assert r["saved"] == r["needed"] == r["saved_percent"] == NOT_REACHED
    assert r["ci"] == [NOT_REACHED, NOT_REACHED]
    assert saved_cell(r) == "not reached"
    # a noisier variant whose mean curve falls short, but not clearly
    variant = [[0.93, 0.95, 0.975], [0.925, 0.95, 0.955], [0.935, 0.95, 0.96]]
    r = paired_labels_saved(*study(variant, reference))
    assert r["saved"] == NOT_REACHED and r["ci"][0] == NOT_REACHED
    assert isinstance(r["ci"][1], float) and r["ci"][1] > 0
    assert saved_cell(r) == f"not reached [not reached, {round(r['ci'][1])}]"


def test_fewer_seeds_than_the_minimum_give_no_interval():
    reference = [[0.93, 0.945, 0.955], [0.92, 0.95, 0.965]]
    variant = [[0.93, 0.95, 0.97], [0.92, 0.95, 0.97]]
    r = paired_labels_saved(*study(variant, reference))
    assert MIN_SEEDS == 3 and r["n_seeds"] == 2
    assert r["saved"] == pytest.approx(380 - (285 + 95 * 0.01 / 0.02))
    assert r["ci"] is None and r["interval"] is None and r["coverage"] is None
    assert r["no_interval"] == "n < 3"
    assert saved_cell(r) == "48 (no interval: n < 3)"
    one = paired_labels_saved(*study(variant[:1], reference[:1]))
    assert one["saved"] == pytest.approx(380 - (285 + 95 * 0.005 / 0.02)) and one["ci"] is None


def test_seeds_with_missing_values_are_left_out():
    reference = [[0.93, 0.945, 0.955], [0.92, 0.95, 0.96], [0.94, 0.955, 0.965]]
    variant = [[0.93, 0.948, 0.972], [0.92, 0.95, 0.965], [0.94, 0.952, 0.973]]
    arrays = study(variant + [[0.9, math.nan, 0.99]], reference + [[0.9, 0.91, 0.92]])
    assert paired_labels_saved(*arrays) == paired_labels_saved(*study(variant, reference))
    empty = paired_labels_saved(*(a[:0] for a in arrays))
    assert empty["saved"] is None and empty["n_seeds"] == 0 and saved_cell(empty) == "-"
    with pytest.raises(ValueError, match="one shape"):
        paired_labels_saved(arrays[0], arrays[1][:, :2], arrays[2], arrays[3])


def test_the_batch_function_matches_one_comparison_at_a_time():
    var, x, ref = simulate(SCENARIOS[0], 4, 20, np.random.default_rng(1))
    batch = labels_saved_arrays(var, x, ref, x)
    for i in range(20):
        one = paired_labels_saved(var[i], x[i], ref[i], x[i])
        assert one["saved"] == pytest.approx(float(batch.saved[i]))
        expected = [float(batch.low[i]), float(batch.high[i])]
        assert [-math.inf if v == NOT_REACHED else v for v in one["ci"]] == pytest.approx(expected)


def test_results_are_strict_json():
    reference = [[0.93, 0.95, 0.965], [0.925, 0.952, 0.966], [0.935, 0.953, 0.964]]
    cases = [
        study([[0.93, 0.94, 0.95]] * 3, reference),  # never reached, both bounds too
        study([[0.93, 0.96, 0.975]] * 3, reference),  # no spread among the variant's runs
        study([[0.93, 0.95, 0.97]], reference[:1]),  # one seed: NaN bounds inside
        study(np.zeros((0, 3)), np.zeros((0, 3))),
    ]
    for arrays in cases:
        r = paired_labels_saved(*arrays)
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        for key in ("saved", "saved_percent", "needed"):
            assert r[key] is None or r[key] == NOT_REACHED or math.isfinite(r[key])
        assert {"saved", "saved_percent", "ci", "interval", "n_seeds", "coverage"} <= r.keys()


def test_interval_coverage_is_near_95_percent_where_the_bootstrap_was_not():
    """4000 simulated 3-seed studies (a variant worth 1.5 random labels, R = 2): the inverted
    t interval covers the true labels saved 95% of the time; the percentile bootstrap the
    report printed as 95% covers about 75%."""
    scenario = next(s for s in SCENARIOS if s.name == "better, kappa 1.5, R=2, sd 0.2")
    var, x, ref = simulate(scenario, 3, 4000, np.random.default_rng(11))
    theta = truth(scenario)
    r = labels_saved_arrays(var, x, ref, x)
    coverage = np.mean((r.low <= theta) & (theta <= r.high))
    assert 0.935 <= coverage <= 0.965  # 4000 studies: a standard error of 0.35 points
    old = bootstrap_intervals(var[:1000], x[:1000], ref[:1000])["pct drop"]
    old_coverage = np.mean((old[:, 0] <= theta) & (theta <= old[:, 1]))
    assert old_coverage < 0.85


def test_coverage_holds_when_the_target_is_barely_reached_or_never():
    for name, n in (("barely, kappa 1.05, R=3", 5), ("worse, kappa 0.7, R=3", 3)):
        scenario = next(s for s in SCENARIOS if s.name == name)
        var, x, ref = simulate(scenario, n, 3000, np.random.default_rng(12))
        theta = truth(scenario)
        r = labels_saved_arrays(var, x, ref, x)
        assert np.mean((r.low <= theta) & (theta <= r.high)) >= 0.935
    assert theta == -math.inf  # the last one: never reached, covered by "not reached" bounds
    assert np.mean(r.low == -math.inf) >= 0.975


def test_the_stated_coverage_comes_from_the_table():
    assert sorted(SIMULATED_COVERAGE) == [3, 5, 10]
    assert all(0.93 <= v <= 1 for v in SIMULATED_COVERAGE.values())
    assert simulated_coverage(2) is None
    assert simulated_coverage(4) == SIMULATED_COVERAGE[3]
    assert simulated_coverage(12) == SIMULATED_COVERAGE[10]
    v, x, r, xr = study([[0.93, 0.95, 0.97]] * 4, [[0.93, 0.95, 0.96]] * 4)
    v = v + np.random.default_rng(0).normal(0, 0.002, v.shape)
    assert paired_labels_saved(v, x, r, xr)["coverage"] == SIMULATED_COVERAGE[3]
    other = paired_labels_saved(v, x, r, xr, level=0.9)
    assert other["coverage"] is None
    assert other["interval"] == "90% CI, paired t test inverted over seeds"
    assert "paired t test" in DESCRIPTION and NOT_REACHED in DESCRIPTION
    assert "at least 94.5%" in DESCRIPTION


def test_table_cells():
    base = {"n_seeds": 5, "no_interval": None, "saved_percent": 10.53, "ci_percent": None}
    assert saved_cell({**base, "saved": 40.2, "ci": [5.4, 66.6]}) == "40 [5, 67]"
    assert saved_cell({**base, "saved": 40.0, "ci": [NOT_REACHED, 67.0]}) == (
        "40 [not reached, 67]"
    )
    assert saved_cell({**base, "saved": -0.3, "ci": [-20.0, 12.0]}) == "0 [-20, 12]"
    assert saved_cell({**base, "saved": NOT_REACHED, "ci": [NOT_REACHED] * 2}) == NOT_REACHED
    assert saved_cell({**base, "saved": 40.0, "ci": None, "no_interval": "n < 3"}) == (
        "40 (no interval: n < 3)"
    )
    assert saved_cell({**base, "saved": None, "ci": None}) == "-"
    pct = {**base, "saved": 40.0, "ci": [5.0, 67.0], "ci_percent": [1.32, NOT_REACHED]}
    assert saved_cell(pct, percent=True) == "10.5% [1.3%, not reached]"
