"""Invariants of the round loop, the oracle and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pal
from pal.loop import Experiment
from pal.tasks import Oracle
from tests.conftest import FAST


@pytest.fixture(scope="module")
def fast_run():
    return pal.run_experiment(**FAST, strategy="random", missing_classes=["3", "7"], seed=5)


def test_rounds_give_r_plus_one_records(fast_run):
    assert [r.round for r in fast_run.rounds] == [0, 1, 2]
    first = fast_run.rounds[0]
    assert first.selected == [] and first.query_class_rates == {}


def test_labeled_pool_grows_by_the_query_size_without_repeats(fast_run):
    sizes = [r.n_labeled for r in fast_run.rounds]
    assert sizes == [40, 60, 80]
    picked = [i for r in fast_run.rounds for i in r.selected]
    assert len(picked) == len(set(picked)) == 40
    for r in fast_run.rounds[1:]:
        assert len(r.selected) == 20
        assert sum(r.query_class_rates.values()) == pytest.approx(1.0)
        assert sum(r.labeled_class_counts.values()) == r.n_labeled


def test_missing_classes_are_absent_from_round_zero_only(fast_run):
    counts = fast_run.rounds[0].labeled_class_counts
    assert counts["3"] == 0 and counts["7"] == 0
    assert sum(counts.values()) == 40


def test_queries_never_touch_the_validation_set_or_the_initial_pool():
    exp = Experiment(pal.make_config(**FAST, strategy="random"))
    initial = set(exp.pool.labeled.tolist())
    val = set(exp.pool.val.tolist())
    pool = set(exp.pool.indices.tolist())
    assert len(val) == 40 and not (initial & val) and initial <= pool
    records = list(exp.rounds())
    picked = {i for r in records for i in r.selected}
    assert not (picked & val) and not (picked & initial) and picked <= pool


def test_result_is_json(fast_run):
    data = json.loads(fast_run.to_json())
    assert data["config"]["missing_classes"] == ["3", "7"]
    assert len(data["rounds"]) == 3
    assert data["rounds"][1]["selected"] == fast_run.rounds[1].selected
    assert "test_accuracy" in fast_run.table().splitlines()[0].replace("test_acc", "test_accuracy")


def test_oracle_noise_rate_is_the_flip_rate():
    y = np.repeat(np.arange(10), 2000)
    oracle = Oracle(y, 10, noise=0.2, seed=0)
    flipped = oracle.labels != y
    assert flipped.mean() == pytest.approx(0.2, abs=0.01)  # a real flip rate, not 0.9 p
    assert np.bincount(oracle.labels[flipped] - y[flipped] + 10)[10] == 0
    assert np.array_equal(Oracle(y, 10, 0.2, seed=0).labels, oracle.labels)
    assert not np.array_equal(Oracle(y, 10, 0.2, seed=1).labels, oracle.labels)
    assert np.array_equal(Oracle(y, 10, 0.0, seed=0).labels, y)


def test_label_noise_reaches_the_labeled_pool_and_is_counted():
    config = pal.make_config(
        **{**FAST, "pool_size": 1200, "initial_size": 400, "query_size": 100, "rounds": 1},
        strategy="random",
        label_noise=0.3,
    )
    exp = Experiment(config)
    records = list(exp.rounds())
    last = records[-1]
    labeled = exp.pool.labeled
    flips = (exp.task.oracle(labeled) != exp.task.y_true[labeled]).sum()
    assert last.n_noisy_labels == flips
    assert last.n_noisy_labels / last.n_labeled == pytest.approx(0.3, abs=0.06)
    # the labels the task network trains on are the oracle's, not the true ones
    assert (exp.task.labels.cpu().numpy()[labeled] != exp.task.y_true[labeled]).sum() == flips


def test_same_seed_same_queries_other_seed_other_queries():
    """Round 0 and the query after it, per seed (the later rounds: the resume test below)."""
    firsts = []
    for seed in (1, 1, 2):
        exp = Experiment(pal.make_config(**FAST, strategy="pal", seed=seed))
        record = exp.run_round()
        firsts.append((record.test_accuracy, list(exp.pool.pending.indices)))
    assert firsts[0] == firsts[1]
    assert len(firsts[0][1]) == 20
    assert firsts[0][1] != firsts[2][1]


def test_resume_from_state_matches_an_uninterrupted_run():
    """Every round after the checkpoint (training and query) is the uninterrupted run's."""
    config = pal.make_config(**FAST, strategy="pal", seed=4)
    straight = pal.run_experiment(config).rounds

    first = Experiment(config)
    first.run_round()
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = Experiment(config)
    resumed.load_state_dict(state)
    rest = list(resumed.rounds())
    assert [r.selected for r in straight[1:]] == [r.selected for r in rest]
    assert [r.test_accuracy for r in straight[1:]] == [r.test_accuracy for r in rest]
    assert resumed.finished


def test_warm_start_carries_the_scoring_network_and_resumes_with_it(tmp_path):
    """``epochs_scoring_warm``: the first query trains the scoring network from scratch, the
    second from the first's weights; a resume after round 1 that is given the strategy's state
    (what a trial's checkpoint saves in ``strategy.pt``) makes the uninterrupted run's queries,
    and one that is not would differ (the state is what the second query starts from)."""
    import torch

    from pal.sweeps.trial import STRATEGY_FILE

    config = pal.make_config(**FAST, strategy="pal", seed=4, epochs_scoring_warm=1)
    straight = pal.run_experiment(config).rounds
    assert [r.query_metrics["scoring/warm_start"] for r in straight[1:]] == [0.0, 1.0]
    cold = pal.run_experiment(config.replace(epochs_scoring_warm=None)).rounds
    assert straight[1].selected == cold[1].selected  # the first query is the paper's
    assert "scoring/warm_start" not in cold[2].query_metrics
    assert straight[2].selected != cold[2].selected

    first = Experiment(config)
    first.run_round()  # round 0, then the first query
    torch.save(first.strategy.state_dict(), tmp_path / STRATEGY_FILE)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Experiment(config)
    resumed.strategy.load_state_dict(torch.load(tmp_path / STRATEGY_FILE, weights_only=True))
    resumed.load_state_dict(state)
    rest = list(resumed.rounds())
    assert [r.selected for r in rest] == [r.selected for r in straight[1:]]
    assert rest[-1].query_metrics["scoring/warm_start"] == 1.0
    without = Experiment(config)
    without.load_state_dict(state)
    last = list(without.rounds())[-1]
    assert last.query_metrics["scoring/warm_start"] == 0.0
    assert last.selected != straight[2].selected


def test_checkpoint_from_another_seed_is_refused():
    a = Experiment(pal.make_config(**FAST, strategy="random", seed=1, label_noise=0.5))
    a.run_round()
    b = Experiment(pal.make_config(**FAST, strategy="random", seed=2, label_noise=0.5))
    with pytest.raises(ValueError, match="oracle labels"):
        b.load_state_dict(a.state_dict())


def test_callbacks_see_every_round():
    seen = []
    pal.run_experiment(
        **FAST, strategy="entropy", callbacks=(lambda rec, exp: seen.append(rec.round),)
    )
    assert seen == [0, 1, 2]


def test_run_round_after_the_end_raises():
    exp = Experiment(pal.make_config(**{**FAST, "rounds": 0}, strategy="random"))
    assert len(list(exp.rounds())) == 1
    with pytest.raises(RuntimeError, match="rounds are done"):
        exp.run_round()


def test_a_diverging_loss_stops_the_experiment_with_a_clear_error():
    from pal.training import TrainingDivergedError

    with pytest.raises(
        TrainingDivergedError,
        match=r"task training diverged.*lr 1000000.0\); lower the learning rate",
    ):
        pal.run_experiment(**FAST, strategy="random", lr_task=1e6, tracking=False)
