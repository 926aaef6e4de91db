"""Verdicts as a family, and no verdict from data that cannot carry one (hand-made runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from pal.reports import write_report
from pal.stats import holm, power
from pal.verdicts import paired_verdicts
from tests.helpers import LABELED, paired_study, run


def family(deltas, noise=0.01, seeds=range(5)):
    """``random`` plus one variant per entry of ``deltas`` (name ``v<i>``), paired by seed."""
    runs = paired_study(0.0, seeds=seeds, noise=noise, rng_seed=0, variant="v_ref")
    runs = [r for r in runs if r["variant"] == "random"]
    rng = np.random.default_rng(1)
    for i, delta in enumerate(deltas):
        for r in list(runs):
            if r["variant"] != "random":
                continue
            acc = list(r["history"]["test_accuracy"].values())
            gap = np.r_[0.0, delta + rng.normal(0.0, noise, len(acc) - 1)]
            seed = int(r["params"]["seed"])
            runs.append(run(f"v{i}", seed, list(np.array(acc) + gap), labeled=LABELED))
    return runs


def auc(r):
    return np.mean([v for s, v in r["history"]["test_accuracy"].items() if s >= 1])


def test_p_values_are_the_paired_t_tests_and_holm_adjusts_them_as_a_family():
    runs = family([0.012, 0.01, 0.008, 0.0])
    verdicts = paired_verdicts(runs, "test_accuracy", "random")
    assert [v.variant for v in verdicts] == ["v0", "v1", "v2", "v3"]
    ref = {r["params"]["seed"]: auc(r) for r in runs if r["variant"] == "random"}
    for v in verdicts:
        ours = {r["params"]["seed"]: auc(r) for r in runs if r["variant"] == v.variant}
        seeds = sorted(ours)
        want = ttest_rel([ours[s] for s in seeds], [ref[s] for s in seeds]).pvalue
        assert v.p_value == pytest.approx(want, rel=1e-9)
        assert (v.family_size, v.correction, v.alpha) == (4, "holm", 0.05)
    adjusted = holm([v.p_value for v in verdicts])
    assert [v.p_adjusted for v in verdicts] == pytest.approx(adjusted.tolist())
    for v in verdicts:  # the verdict follows the adjusted p-value
        assert (v.verdict in ("better", "worse")) == (v.p_adjusted <= 0.05)


def test_holm_turns_verdicts_a_single_test_would_give_into_no_difference():
    # three variants each about p = 0.02-0.04 on its own: none survives Holm over the three
    rng = np.random.default_rng(4)
    runs = []
    # one-sample p-values of these differences: 0.020, 0.020, 0.028; Holm's smallest is 0.059
    diffs = {
        "a": [0.9, 0.2, 1.6, 0.7, 0.8],
        "b": [1.0, 0.3, 1.5, 0.4, 0.9],
        "c": [1.1, 0.4, 0.9, 1.6],
    }
    for s in range(5):
        base = 0.9 + rng.normal(0, 0.01)
        runs.append(run("random", s, [base] * 3))
        for name, d in diffs.items():
            if s < len(d):
                runs.append(run(name, s, [base, base + d[s] / 100, base + d[s] / 100]))
    holm_ = {v.variant: v for v in paired_verdicts(runs, "test_accuracy", "random")}
    none = {
        v.variant: v for v in paired_verdicts(runs, "test_accuracy", "random", correction="none")
    }
    assert all(0.015 < v.p_value < 0.03 for v in holm_.values())
    assert all(v.verdict == "better" for v in none.values())
    assert all(v.verdict == "no difference detected" for v in holm_.values())
    assert all(v.p_adjusted == v.p_value for v in none.values())


def test_the_detectable_effect_and_the_seeds_needed_come_from_the_spread_of_the_pairs():
    verdicts = paired_verdicts(family([0.0, 0.0]), "test_accuracy", "random")
    for v in verdicts:
        level = 0.05 / 2  # Holm's strictest step over a family of two
        assert power(v.detectable_effect / v.auc_sd, v.n_seeds, level) == pytest.approx(0.8)
        assert power(0.01 / v.auc_sd, v.seeds_needed, level) >= 0.8
        assert power(0.01 / v.auc_sd, v.seeds_needed - 1, level) < 0.8
    (v,) = paired_verdicts(family([0.0]), "test_accuracy", "random", effect=0.002)
    (w,) = paired_verdicts(family([0.0]), "test_accuracy", "random", effect=0.02)
    assert v.seeds_needed > w.seeds_needed and v.effect == 0.002


@pytest.mark.parametrize(
    ("damage", "reason", "shared"),
    [
        (
            lambda runs: _set(runs, "v0", "2", 3, math.nan),
            "non-finite test_accuracy in v0 seed 2",
            False,
        ),
        (
            lambda runs: _set(runs, "random", "1", 4, math.nan),
            "non-finite test_accuracy in random seed 1 round 4",
            True,
        ),
        (lambda runs: _drop(runs, "v0", "3", 4), "v0 seed 3 lacks round 4", False),
        (
            lambda runs: _labeled(runs, "v0", "0", 2, 205),
            "labeled counts differ in round 2 (seed 0: v0 205, random 200)",
            False,
        ),
    ],
    ids=["nan-variant", "nan-reference-final", "missing-round", "labeled-counts"],
)
def test_bad_data_gives_no_verdict_with_the_reason(damage, reason, shared):
    runs = family([0.03, 0.03])
    damage(runs)
    v0, v1 = paired_verdicts(runs, "test_accuracy", "random")
    assert v0.verdict.startswith("no verdict (") and reason in v0.verdict, v0.verdict
    assert v0.reason == v0.verdict and v0.p_value is None and v0.p_adjusted is None
    assert v0.labels_saved["saved"] is None  # nothing computed from it, not even "not reached"
    if shared:  # the reference's damage reaches every comparison: an empty family
        assert v1.verdict.startswith("no verdict") and v1.family_size == 0
    else:  # the comparison without a verdict is not in the family
        assert v1.verdict == "better" and v1.family_size == 1


def test_zero_variance_is_flagged_and_gets_no_verdict():
    runs = [run("random", s, [0.5, 0.6, 0.7]) for s in range(4)]
    runs += [run("same", s, [0.5, 0.62, 0.72]) for s in range(4)]  # +2 points in every seed
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    assert v.verdict.startswith("no verdict (zero variance") and "+2.00 points" in v.verdict
    assert v.flags == ["degenerate interval (zero variance)"]
    assert v.detectable_effect is None and v.p_value is None


def test_underfit_rounds_are_flagged_by_name():
    runs = family([0.03])
    for r in runs:
        r["history"]["train_accuracy"] = {s: 1.0 for s in range(5)}
        if (r["variant"], r["params"]["seed"]) == ("v0", "1"):
            r["history"]["train_accuracy"][2] = 0.84
            r["underfit"] = ["2:train_accuracy"]
        if (r["variant"], r["params"]["seed"]) == ("random", "3"):
            r["underfit"] = ["7:train_accuracy"]  # a round the comparison does not hold
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    assert v.verdict == "better"  # flagged, not withheld
    assert v.underfit == ["v0 seed 1 round 2: train_accuracy 0.840"]
    assert v.flags == ["underfit in 1 compared round(s)"]
    rep_md = write_report({"name": "t", "runs": runs}, _tmp()).markdown
    assert (
        "- **v0**: underfit in 1 compared round(s): v0 seed 1 round 2: train_accuracy 0.840."
        in (rep_md)
    )


def test_the_report_declares_its_family_and_warns_of_mixed_code_versions(tmp_path):
    runs = family([0.03, 0.0])
    for r in runs:
        r["code_version"] = "0.1.0+gaaaa" if r["params"]["seed"] != "4" else "0.1.0+gbbbb"
    rep = write_report({"name": "t", "runs": runs}, tmp_path / "holm")
    data = json.loads((tmp_path / "holm" / "report.json").read_text())
    assert data["family"] == {
        "comparisons": 2,
        "family_size": 2,
        "correction": "holm",
        "alpha": 0.05,
        "design": None,
    }
    for v in data["verdicts"]:
        assert {"p_value", "p_adjusted", "family_size", "correction", "detectable_effect"} <= set(v)
    assert "The family is 2 comparisons" in rep.markdown and "Holm's step-down" in rep.markdown
    assert data["code_versions"] == {"0.1.0+gaaaa": 12, "0.1.0+gbbbb": 3}
    assert rep.warnings and "2 code versions" in rep.warnings[0]
    assert rep.markdown.count("**Warning:** the study's finished runs come from 2 code") == 1

    none = write_report({"name": "t", "runs": runs, "correction": "none"}, tmp_path / "none")
    assert "each tested at 5% on its own (correction `none`)" in none.markdown
    assert "up to 10%" in none.markdown  # 1 - 0.95^2
    assert all(v.correction == "none" for v in none.verdicts)
    same = write_report({"name": "t", "runs": family([0.03])}, tmp_path / "one")
    assert same.warnings == [] and same.code_versions == {"unknown": 10}


def test_segmentation_reports_speak_of_miou():
    runs = family([0.03])
    for r in runs:
        r["history"]["test_miou"] = dict(r["history"]["test_accuracy"])
    md = write_report({"name": "seg", "runs": runs}, _tmp()).markdown
    assert "## Test mIoU (mean ± sample std over runs)" in md
    assert "## Labels saved (to reach the reference's final mIoU" in md
    assert "the reference's final mean mIoU" in md
    assert "accuracy" not in md.split("## Seconds")[0]


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="pal-verdicts-"))


def _set(runs, variant, seed, step, value):
    for r in runs:
        if (r["variant"], r["params"]["seed"]) == (variant, seed):
            r["history"]["test_accuracy"][step] = value


def _drop(runs, variant, seed, step):
    for r in runs:
        if (r["variant"], r["params"]["seed"]) == (variant, seed):
            del r["history"]["test_accuracy"][step]


def _labeled(runs, variant, seed, step, value):
    for r in runs:
        if (r["variant"], r["params"]["seed"]) == (variant, seed):
            r["history"]["n_labeled"][step] = value
