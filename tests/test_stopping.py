"""Stopping signals (pal.stopping), the labeling round's record, and what strategies say they
can do."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import pal
from pal.loop import run
from pal.results import LabelRound, RoundRecord
from pal.stopping import (
    EPSILON,
    KAPPA_WINDOW,
    PATIENCE,
    cohen_kappa,
    first_plateau,
    kappa_average,
    plateau,
    plateau_threshold,
    stop_cost,
    stop_set,
)
from pal.strategies import (
    STRATEGIES,
    QueryContext,
    build_strategy,
    label_free_strategies,
)
from pal.training import Normalizer
from tests.conftest import FAST


def test_plateau_needs_patience_plus_one_measured_rounds():
    assert PATIENCE == 2
    assert math.isnan(plateau([0.5, 0.6]).fired)
    assert math.isnan(plateau([0.5, math.nan, 0.6]).fired)  # a round without a measure is left out
    flat = plateau([0.1, 0.800, 0.802, 0.801])
    assert flat.fired == 1.0 and flat.change == pytest.approx(0.001)
    rising = plateau([0.70, 0.75, 0.80])
    assert rising.fired == 0.0 and rising.change == pytest.approx(0.10)
    # the span of the last three, not the end-to-end change: up and back down is no plateau
    assert plateau([0.80, 0.80 + 2 * EPSILON, 0.80]).fired == 0.0


def test_the_plateau_threshold_is_the_noise_of_the_validation_set():
    # 100 images at 0.9: a standard error of 0.03, three images; 5,000 images: 0.0042 -> EPSILON
    assert plateau_threshold(0.9, 100) == pytest.approx(0.03)
    assert plateau_threshold(0.9, 5000) == EPSILON
    assert plateau_threshold(0.9, None) == EPSILON
    curve = [0.5, 0.88, 0.90, 0.89]  # moves of one or two images of 100: noise, a plateau
    assert plateau(curve, 100).fired == 1.0 and plateau(curve).fired == 0.0
    assert plateau(curve, 100).threshold == pytest.approx(plateau_threshold(0.89, 100))
    # shown from the second measured round: the change so far, no verdict yet
    early = plateau([math.nan, 0.6, 0.7], 100)
    assert math.isnan(early.fired) and early.change == pytest.approx(0.1) and early.measured == 2


def test_kappa_and_its_average_over_rounds():
    a = np.asarray([0, 0, 1, 1, 2, 2, 2, 2])
    assert cohen_kappa(a, a, 3) == 1.0
    assert cohen_kappa(a, (a + 1) % 3, 3) < 0  # every image changed class
    b = a.copy()
    b[0] = 1  # one of eight changed
    k = cohen_kappa(a, b, 3)
    observed, expected = 7 / 8, (2 / 8) * (1 / 8) + (2 / 8) * (3 / 8) + (4 / 8) * (4 / 8)
    assert k == pytest.approx((observed - expected) / (1 - expected))
    assert math.isnan(kappa_average([]).mean)
    few = kappa_average([math.nan, 0.995])
    assert math.isnan(few.fired) and few.mean == 0.995  # shown, no verdict yet
    assert kappa_average([0.5] + [0.995] * KAPPA_WINDOW).fired == 1.0
    assert kappa_average([0.995, 0.995, 0.9]).fired == 0.0
    pool = np.arange(10_000)
    assert (
        np.array_equal(stop_set(pool, 3), stop_set(pool[::-1], 3))
        and len(stop_set(pool, 3)) == 2000
    )
    assert not np.array_equal(stop_set(pool, 3), stop_set(pool, 4))


def test_first_plateau_and_what_stopping_there_costs():
    assert first_plateau([0.5, 0.6, 0.7, 0.7, 0.7, 0.7]) == 4
    assert first_plateau([0.5, 0.6, 0.7]) is None
    val = [[0.5, 0.7, 0.7, 0.7, 0.9], [0.5, 0.6, 0.7, 0.8, 0.9]]  # the first fires at round 3
    test = [[0.4, 0.6, 0.65, 0.66, 0.80], [0.4, 0.5, 0.6, 0.7, 0.8]]
    labels = [[10, 20, 30, 40, 50], [10, 20, 30, 40, 50]]
    cost = stop_cost("pal", val, test, labels)
    assert (cost.runs, cost.fired) == (2, 1)
    assert cost.stop_labels == 40 and cost.final_labels == 50
    assert cost.labels_saved == pytest.approx((10 + 0) / 2)  # a run that never fired saves none
    assert cost.metric_left == pytest.approx((0.80 - 0.66 + 0) / 2)
    assert cost.metric_left_max == pytest.approx(0.14)
    never = stop_cost("random", val[1:], test[1:], labels[1:])
    assert never.fired == 0 and math.isnan(never.stop_labels) and never.labels_saved == 0.0


def test_a_labeling_round_shares_the_experiments_vocabulary():
    counts = {"cat": 3, "dog": 1}
    common = dict(
        round=2, n_labeled=4, val_accuracy=0.5, test_accuracy=0.4, train_accuracy=1.0,
        labeled_class_counts=counts, query_metrics={"ss_sc_pearson": 0.3, "sd_std/2": 0.1},
        mean_confidence=0.9, val_plateau=0.0, val_change=0.02,
    )  # fmt: skip
    label = LabelRound(strategy="pal", label_free=False, n=2, n_offerable=9, **common)
    label.seconds = {"train": 1.0, "evaluate": 0.5, "query": 2.0, "total": 4.0}
    record = RoundRecord(
        query_class_rates={}, n_noisy_labels=0, selected=[], seconds=4.0, train_seconds=1.0,
        eval_seconds=0.5, query_seconds=2.0, **common,
    )  # fmt: skip
    mine, theirs = label.metrics(), record.metrics()
    shared = set(mine) & set(theirs)
    assert {"labeled_class_fraction/cat", "ss_sc_pearson", "sd_std/2", "round_seconds"} <= shared
    assert {"train_seconds", "eval_seconds", "query_seconds", "mean_confidence"} <= shared
    assert {k: mine[k] for k in shared} == {k: theirs[k] for k in shared}
    assert not [k for k in mine if k.startswith(("labeled_count/", "seconds/", "query/"))]


def test_a_labeling_round_reads_back_what_it_wrote():
    label = LabelRound(round=1, strategy="coreset", label_free=True, n=5, n_labeled=0,
                       n_offerable=100, labeled_class_counts={"a": 0}, seconds={"total": 1.5},
                       config={"seed": 3}, query_metrics={"label_free": 1.0})  # fmt: skip
    text = label.to_json()
    assert "NaN" not in text and json.loads(text)["val_accuracy"] is None  # strict JSON
    back = LabelRound.from_dict(json.loads(text))
    assert math.isnan(back.val_accuracy) and back.task_epochs is None
    assert back.metrics() == label.metrics() and back.to_json() == text
    # a round.json without the stopping signals (written before they were recorded) still reads
    old = {k: v for k, v in json.loads(text).items() if k not in ("val_change", "val_plateau")}
    assert math.isnan(LabelRound.from_dict(old).val_plateau)


def test_strategies_say_whether_they_choose_without_labels():
    assert label_free_strategies() == ["coreset", "pal", "random", "typiclust"]
    config = pal.make_config(FAST, strategy="entropy")
    x = torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8)
    ctx = QueryContext(
        config=config, x=x, labels=torch.zeros(40, dtype=torch.int64),
        labeled=torch.empty(0, dtype=torch.int64), unlabeled=torch.arange(40), num_classes=10,
        task_model=None, normalize=Normalizer(x), augment_mode="none", seed=1,
    )  # fmt: skip
    with pytest.raises(ValueError, match="cannot choose with no label"):
        build_strategy(config).query_label_free(ctx, 5)
    for name in ("random", "coreset"):
        cfg = config.replace(strategy=name, epochs_scoring=1)
        query = build_strategy(cfg).query_label_free(dataclasses.replace(ctx, config=cfg), 5)
        again = build_strategy(cfg).query_label_free(dataclasses.replace(ctx, config=cfg), 5)
        assert len(set(query.indices.tolist())) == 5 and torch.equal(query.indices, again.indices)
    assert all(isinstance(STRATEGIES.get(n).label_free, bool) for n in STRATEGIES.names())


def test_an_experiment_logs_the_stopping_signals_every_round():
    config = pal.make_config(FAST, rounds=3, strategy="random", pool_size=300, val_size=40)
    records = run(config).rounds
    confidence = np.asarray([r.metrics()["mean_confidence"] for r in records])
    assert ((confidence > 0.1) & (confidence <= 1.0)).all()  # a probability, every round
    plateaus = [r.val_plateau for r in records]
    assert all(math.isnan(p) for p in plateaus[:PATIENCE]) and plateaus[PATIENCE] in (0.0, 1.0)
    vals = [r.val_accuracy for r in records]
    assert records[-1].val_change == pytest.approx(vals[-1] - vals[-1 - PATIENCE])
    kappas = [r.metrics().get("kappa", math.nan) for r in records]
    assert math.isnan(kappas[0]) and all(-1.0 <= k <= 1.0 for k in kappas[1:])


def test_a_study_report_says_what_stopping_at_the_plateau_would_have_cost(tmp_path):
    from pal.reports import write_report
    from tests.helpers import LABELED, run

    val_flat = {0: 0.50, 1: 0.70, 2: 0.70, 3: 0.701, 4: 0.72}  # fires after round 3
    val_rising = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.80, 4: 0.90}
    acc = [0.5, 0.6, 0.7, 0.75, 0.80]
    runs = [run("pal", s, acc, LABELED, val_accuracy=val_flat) for s in (0, 1, 2)]
    runs += [run("random", s, acc, LABELED, val_accuracy=val_rising) for s in (0, 1, 2)]
    rep = write_report({"name": "toy", "parent_run_id": None, "runs": runs}, tmp_path)
    by_variant = {c.variant: c for c in rep.stopping}
    pal_cost, random_cost = by_variant["pal"], by_variant["random"]
    assert (pal_cost.fired, pal_cost.stop_labels, pal_cost.labels_saved) == (3, 250, 50)
    assert pal_cost.metric_left == pytest.approx(0.05)
    assert (random_cost.fired, random_cost.labels_saved, random_cost.metric_left) == (0, 0, 0)
    assert "## Had a person stopped at the first validation plateau" in rep.markdown
    assert "| pal | 3 | 3 | 250 | 300 | 50 | 5.00 | 5.00 |" in rep.markdown
    saved = json.loads(rep.files["report.json"].read_text())["stopping"]
    assert [(c["variant"], c["labels_saved"]) for c in saved] == [("pal", 50.0), ("random", 0.0)]
