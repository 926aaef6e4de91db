"""The first-query terms study (benchmarks/missing_share.py) measures the query PAL runs."""

from __future__ import annotations

import numpy as np
import pytest

import pal
from benchmarks import missing_share
from pal.loop import Experiment
from tests.conftest import FAST

CONFIG = pal.Config(**{**FAST, "rounds": 1, "missing_classes": ("8", "9"), "epochs_scoring": 4})


@pytest.mark.parametrize("variant", [{}, {"lambda1": 0.0, "score_norm": "rank"}])
def test_each_variant_is_the_query_the_loop_takes(digits, variant):
    """One scoring network serves every variant; each variant's picks are exactly those of a
    run of PAL with that variant's settings, and random's share is the random strategy's."""
    out = missing_share.measure(CONFIG, {"v": variant}, digits)
    exp = Experiment(CONFIG.replace(**variant), digits)
    exp.run_round()
    assert out["variants"]["v"]["picked"] == list(exp.pool.pending.indices)
    truth = digits.y_train.numpy()[np.asarray(exp.pool.pending.indices)]
    assert out["variants"]["v"]["share"] == pytest.approx(np.isin(truth, [8, 9]).mean())

    rand = Experiment(CONFIG.replace(strategy="random"), digits)
    rand.run_round()
    picked = np.asarray(rand.pool.pending.indices)
    assert out["random"] == pytest.approx(np.isin(digits.y_train.numpy()[picked], [8, 9]).mean())


def test_summary_gives_each_variant_its_interval_and_ratio_to_random():
    seeds = [
        {"random": r, "variants": {"v": {"share": s, "score_sd_spearman/2": 0.5}}}
        for r, s in [(0.2, 0.6), (0.1, 0.4), (0.3, 0.5)]
    ]
    rows = missing_share.summary(seeds)
    assert rows["v"]["mean"] == pytest.approx(0.5)
    assert rows["v"]["vs_random"] == pytest.approx(2.5)
    low, high = rows["v"]["ci"]
    assert low == pytest.approx(0.5 - 4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert high == pytest.approx(0.5 + 4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert rows["v"]["score_sd_spearman"] == 0.5


def test_term_variants_cover_every_term_norm_and_finetune():
    variants = missing_share.term_variants()
    assert len(variants) == 1 + 3 + 2 * 3 * 2  # S_S; +S_C x norm; (+S_D, all) x norm x fine-tune
    for keys in variants.values():
        pal.Config(**keys)  # every variant is a valid config


def test_auroc_matches_sklearn_and_reads_below_half_as_preferring_the_known_classes():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    score = np.round(rng.normal(size=200), 1)  # ties
    positive = rng.random(200) < 0.3
    assert missing_share.auroc(score, positive) == pytest.approx(roc_auc_score(positive, score))
    assert missing_share.auroc(np.arange(4.0), np.array([False, False, True, True])) == 1.0
    assert missing_share.auroc(np.arange(4.0), np.array([True, True, False, False])) == 0.0
    assert np.isnan(missing_share.auroc(np.arange(3.0), np.zeros(3, dtype=bool)))


def test_render_puts_saved_settings_side_by_side(tmp_path):
    """--render writes the table across settings from saved results, without training."""
    import json

    def saved(shift):
        seeds = [
            {
                "random": 0.2,
                "n_query": 10,
                "n_unlabeled": 100,
                "pool": 0.2,
                "auroc": {"S_S": 0.3 + shift, "S_C": 0.6},
                "scoring": {"scoring/rotation_train_accuracy": 0.9},
                "missing_classes": ["y"],
                "variants": {"S_S": {"share": s + shift, "class_rates": {"x": 1 - s, "y": s}}},
            }
            for s in (0.4, 0.5, 0.6)
        ]
        return {"config": {}, "seeds": seeds, "summary": missing_share.summary(seeds)}

    paths = []
    for name, shift in (("a", 0.0), ("b", 0.1)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({name: saved(shift)}))
    missing_share.main(["--render", *map(str, paths), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "missing_share.md").read_text()
    assert "| variant | a | b |" in text
    assert "| S_S | 0.500 (2.50x) | 0.600 (3.00x) |" in text
    assert "| AUROC of S_S | 0.30 | 0.40 |" in text
    assert "### a:" in text and "### b:" in text
    assert "| variant | x | y* |" in text and "| S_S | 0.50 | 0.50 |" in text
    assert set(json.loads((tmp_path / "out" / "missing_share.json").read_text())) == {"a", "b"}
