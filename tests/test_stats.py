"""The verdicts' statistics: paired t, Holm, power, group-sequential designs, and Monte-Carlo
checks that a family of comparisons holds its error rate, at fixed seeds and grown until
decided (synthetic per-seed AUC differences, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from pal import stats
from pal.stats import SequentialDesign, decide, holm, simulate_until_decided

STUDIES = 6000  # per Monte-Carlo check: the FWER's standard error is about 0.3 points


def test_the_paired_t_test_is_scipys():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        a, b = rng.normal(size=n), rng.normal(size=n)
        test = stats.paired_t_test(a - b)
        want = ttest_rel(a, b)
        assert test.p == pytest.approx(want.pvalue, rel=1e-10)
        assert test.t == pytest.approx(want.statistic, rel=1e-10)
        assert list(test.ci) == pytest.approx(list(want.confidence_interval()), rel=1e-10)
    zero = stats.paired_t_test([0.02, 0.02, 0.02])
    assert zero.sd == 0 and math.isnan(zero.p)  # no p-value from zero variance


def test_holm_steps_down_and_skips_missing_p_values():
    got = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone: 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(got[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert stats.adjust([0.01, 0.02], "none").tolist() == [0.01, 0.02]
    with pytest.raises(ValueError, match="correction"):
        stats.adjust([0.01], "bonferonni")


def test_the_detectable_effect_has_80_percent_power_and_seeds_needed_is_the_fewest():
    sd, n, alpha = 0.006, 5, 0.05 / 5
    effect = stats.detectable_effect(sd, n, alpha)
    assert stats.power(effect / sd, n, alpha) == pytest.approx(0.8, abs=1e-6)
    assert stats.power(0.9 * effect / sd, n, alpha) < 0.8
    needed = stats.seeds_needed(sd, 0.01, alpha)
    assert stats.power(0.01 / sd, needed, alpha) >= 0.8 > stats.power(0.01 / sd, needed - 1, alpha)
    # the textbook case: d = 1 at the 5% level needs 10 pairs for 80% power
    assert stats.seeds_needed(1.0, 1.0, 0.05) == 10
    assert stats.detectable_effect(0.0, 5, 0.05) is None
    assert stats.detectable_effect(0.01, 1, 0.05) is None


def test_a_design_plans_its_looks_and_its_last_batch_reaches_the_most():
    assert SequentialDesign.planned(3, 2, 10).looks == (3, 5, 7, 10)
    assert SequentialDesign.planned(3, 2, 9).looks == (3, 5, 7, 9)
    assert SequentialDesign.planned(3, 3, 4).looks == (3, 4)
    d = SequentialDesign((3, 5, 7, 10))
    assert [d.reached(n) for n in (2, 3, 6, 10, 12)] == [0, 1, 2, 4, 4]
    assert [d.next_look(n) for n in (3, 6, 10)] == [5, 7, None]
    with pytest.raises(ValueError, match="looks"):
        SequentialDesign((2, 5))
    with pytest.raises(ValueError, match="boundary"):
        SequentialDesign((3, 5), "haybittle")


def test_one_look_is_the_fixed_t_test_and_obrien_fleming_spends_little_early():
    rng = np.random.default_rng(1)
    d = rng.normal(0.5, 1.0, size=(400, 10))
    fixed = SequentialDesign((10,), "pocock")
    stat, _ = fixed.statistic(d)
    t_p = np.array([stats.paired_t_test(row).p for row in d])
    # the repeated p-value of one look is the t test's, up to the null simulation's resolution
    np.testing.assert_allclose(fixed.p_values(stat), t_p, atol=4e-3)
    obf = SequentialDesign((3, 5, 7, 10), "obrien_fleming").critical_values(0.05)
    pocock = SequentialDesign((3, 5, 7, 10), "pocock").critical_values(0.05)
    assert obf[0] > 20 and obf[-1] < 2.5  # 3 seeds decide almost nothing; 10 nearly as fixed
    assert obf[-1] < pocock[-1] and obf[0] > pocock[0]
    assert obf[-1] > 2.262  # the fixed test's |t| at 10 seeds: a look costs something


@pytest.mark.parametrize("boundary", ["obrien_fleming", "pocock"])
def test_five_null_variants_grown_until_decided_keep_the_family_error_at_5_percent(boundary):
    design = SequentialDesign.planned(3, 2, 10, boundary)
    out = simulate_until_decided([0.0] * 5, design, studies=STUDIES, seed=7)
    fwer = out["reject"].any(axis=1).mean()
    assert fwer <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / STUDIES)
    assert (out["seeds"] == 10).mean() > 0.9  # a null comparison runs to the last look
    # without the family correction the same rule makes a false verdict about four times as often
    loose = simulate_until_decided([0.0] * 5, design, correction="none", studies=STUDIES, seed=7)
    assert loose["reject"].any(axis=1).mean() > 0.15


@pytest.mark.parametrize("seeds", [3, 5])
def test_five_null_variants_at_fixed_seeds_keep_it_with_holm_and_not_without(seeds):
    design = SequentialDesign((seeds,), "pocock")
    holm_ = simulate_until_decided([0.0] * 5, design, studies=STUDIES, seed=3)
    none = simulate_until_decided([0.0] * 5, design, correction="none", studies=STUDIES, seed=3)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / STUDIES)
    assert holm_["reject"].any(axis=1).mean() <= bound
    assert none["reject"].any(axis=1).mean() > 0.17  # about 20%: the figure


def test_a_real_effect_is_decided_early_and_saves_seeds_against_a_fixed_design():
    design = SequentialDesign.planned(3, 2, 10, "obrien_fleming")
    grown = simulate_until_decided([2.0] * 5, design, studies=STUDIES, seed=11)
    fixed = simulate_until_decided([2.0] * 5, SequentialDesign((10,)), studies=STUDIES, seed=11)
    assert grown["reject"].mean() > 0.99 and fixed["reject"].mean() > 0.99
    assert grown["seeds"].mean() < 8.0  # against 10 for the fixed design of the same power
    assert (grown["direction"][grown["reject"]] == 1).all()


def test_decide_matches_the_simulations_rule_on_one_family():
    rng = np.random.default_rng(5)
    diffs = [rng.normal(mu, 1.0, size=5) for mu in (0.0, 0.2, 3.0)]
    design = SequentialDesign((3, 5))
    got = decide(diffs, design=design)
    stat, sign = design.statistic(np.stack(diffs))
    want = holm(design.p_values(stat))
    assert [g.p_adjusted for g in got] == pytest.approx(want.tolist())
    assert [g.reject for g in got] == (want <= 0.05).tolist()
    assert got[2].reject and got[2].direction == 1 == sign[2]
    fixed = decide(diffs)  # no design: the t tests, Holm-adjusted
    assert [f.p_value for f in fixed] == pytest.approx([stats.paired_t_test(d).p for d in diffs])
