"""Fitting: checkpoint selection on validation, SWA, the training-set fit check and its
warnings, training the task network until it fits (``epochs_task_max``), and the scoring
network's fit metrics in PAL's query."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pal
from pal.config import ConfigError
from pal.results import ExperimentResult, RoundRecord
from pal.tasks import epoch_schedule
from pal.training import FitSpec, Selection, UnderfitWarning, fit, warn_underfit
from tests.conftest import FAST


def _run(**overrides):
    return pal.run_experiment(**{**FAST, **overrides})


def _regression(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=gen)
    module = nn.Linear(3, 1)

    def loss(pos: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(module(x[pos]).squeeze(1), y[pos])

    return module, loss


def test_selection_checks_evenly_and_always_at_the_last_epoch():
    select = Selection(lambda: 0.0, checks=4)
    assert select.epochs(20) == {5, 10, 15, 20}
    assert select.epochs(3) == {1, 2, 3}
    assert 7 in Selection(lambda: 0.0, checks=3).epochs(7)


def test_fit_keeps_the_weights_of_the_checked_epoch_with_the_lowest_value():
    torch.manual_seed(0)
    module, loss = _regression()
    seen: dict[int, torch.Tensor] = {}
    values = iter([5.0, 1.0, 3.0, 4.0])  # the second check (epoch 4) is best
    epoch = {"n": 0}

    def progress(phase, e, total):
        epoch["n"] = e
        if e % 2 == 0:
            seen[e] = module.weight.detach().clone()

    spec = FitSpec(epochs=8, lr=0.05, batch_size=16)
    report = fit(
        module,
        64,
        loss,
        spec,
        torch.Generator().manual_seed(1),
        progress=progress,
        select=Selection(lambda: next(values), checks=4),
    )
    assert report.chosen_epoch == 4 and report.chosen_value == 1.0
    assert torch.equal(module.weight, seen[4])
    assert not torch.equal(module.weight, seen[8])  # the last epoch's weights were replaced


def test_fit_without_selection_keeps_the_last_epoch():
    torch.manual_seed(0)
    module, loss = _regression()
    report = fit(
        module,
        64,
        loss,
        FitSpec(epochs=3, lr=0.05, batch_size=16),
        torch.Generator().manual_seed(1),
    )
    assert report.chosen_epoch == 3 and math.isnan(report.chosen_value)
    assert report.last_loss < 10


def test_swa_returns_the_average_of_the_weights_from_swa_start_on():
    torch.manual_seed(0)
    module, loss = _regression()
    snapshots = []

    def progress(phase, e, total):
        if e >= 3:  # ceil(0.5 * 6): the averaged epochs
            snapshots.append(module.weight.detach().clone())

    spec = FitSpec(epochs=6, lr=0.05, batch_size=16, swa=True, swa_start=0.5)
    report = fit(module, 64, loss, spec, torch.Generator().manual_seed(1), progress=progress)
    assert report.chosen_epoch == 0
    assert torch.allclose(module.weight, torch.stack(snapshots).mean(0), atol=1e-6)
    assert not torch.equal(module.weight, snapshots[-1])


def test_warn_underfit_warns_below_the_threshold_only():
    with pytest.warns(UnderfitWarning, match=r"round 3: the task network fits .* at 0\.800"):
        assert warn_underfit("train_accuracy", 0.8, 0.99, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_underfit("train_accuracy", 0.995, 0.99, 3)
        assert not warn_underfit("train_accuracy", math.nan, 0.99, 3)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model_selection", "best"),
        ("val_checks", 0),
        ("fit_threshold", 1.5),
        ("randaugment_ops", -1),
        ("randaugment_magnitude", 2.0),
        ("swa_start", 1.0),
        ("epochs_task_max", 29),  # below epochs_task (30)
        ("epochs_task_max", 0),
    ],
)
def test_bad_fitting_keys_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        pal.make_config(**{key: value})


def test_rounds_record_train_accuracy_and_warn_when_the_task_net_underfits():
    with pytest.warns(UnderfitWarning, match="train_accuracy"):
        result = _run(strategy="random", tracking=False, epochs_task=1, fit_threshold=1.0)
    for r in result.rounds:
        assert 0.0 <= r.train_accuracy < 1.0
        assert r.metrics()["train_accuracy"] == r.train_accuracy
        assert "train_accuracy" in r.underfit
    assert "*" in result.table()


def test_train_accuracy_is_the_task_networks_accuracy_on_the_labeled_set():
    exp = pal.Experiment(
        pal.make_config(**{**FAST, "strategy": "random", "epochs_task": 6, "fit_threshold": 0.0})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnderfitWarning)  # threshold 0: no warning
        record = exp.run_round()
    labeled = torch.as_tensor(exp.pool.labeled)
    with exp.runtime.autocast():  # the precision the round ran in (bf16 where auto chose it)
        logits = pal.training.predict_logits(
            exp.task_model, exp.x_train[labeled], exp.normalize, exp.config.eval_batch_size
        )
    expected = float((logits.argmax(1) == exp.task.labels[labeled]).float().mean())
    assert record.train_accuracy == pytest.approx(expected)
    assert record.underfit == []


def test_model_selection_last_keeps_the_last_epoch_and_best_val_may_not():
    last = _run(
        strategy="random",
        tracking=False,
        rounds=0,
        epochs_task=8,
        model_selection="last",
        fit_threshold=0.0,
    )
    assert last.rounds[0].task_epoch == 8
    best = _run(
        strategy="random",
        tracking=False,
        rounds=0,
        epochs_task=8,
        val_checks=8,
        fit_threshold=0.0,
    )
    assert 1 <= best.rounds[0].task_epoch <= 8
    # the chosen epoch's validation accuracy is the best of the checks: never below the last's
    assert best.rounds[0].val_accuracy >= last.rounds[0].val_accuracy


def test_pal_query_records_its_scoring_networks_fit():
    result = _run(strategy="pal", tracking=False, rounds=1, fit_threshold=0.0)
    metrics = result.rounds[1].query_metrics
    for key in (
        "scoring/rotation_train_accuracy",
        "scoring/class_train_accuracy",
        "scoring/rotation_val_accuracy",
        "scoring/class_val_accuracy",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 1 <= metrics["scoring/epoch"] <= FAST["epochs_scoring"]
    with pytest.warns(UnderfitWarning, match="scoring/rotation_train_accuracy"):
        _run(strategy="pal", tracking=False, rounds=1, fit_threshold=1.0)


def test_underfit_round_words_for_the_mlflow_tag():
    record = RoundRecord(0, 10, 0.5, 0.5, {}, {}, 0, [], 1.0, underfit=["train_accuracy"])
    assert record.to_dict()["underfit"] == ["train_accuracy"]


def test_randaugment_and_swa_change_the_task_network_and_stay_seeded():
    kw = dict(strategy="random", tracking=False, rounds=0, epochs_task=4, fit_threshold=0.0)
    plain = _run(**kw).rounds[0]
    strong = _run(**kw, randaugment_ops=2, randaugment_magnitude=0.5).rounds[0]
    again = _run(**kw, randaugment_ops=2, randaugment_magnitude=0.5).rounds[0]
    averaged = _run(**kw, swa=True, model_selection="last").rounds[0]
    assert strong.train_accuracy == again.train_accuracy
    assert strong.test_accuracy == again.test_accuracy
    assert (strong.train_accuracy, strong.test_accuracy) != (
        plain.train_accuracy,
        plain.test_accuracy,
    )
    assert averaged.task_epoch == 0  # the SWA average is what the round kept


def test_randaugment_is_refused_for_segmentation():
    with pytest.raises(ConfigError, match="randaugment_ops"):
        pal.Experiment(pal.make_config("configs/digit_scenes.yaml", randaugment_ops=2))


def test_the_scoring_network_is_selected_on_the_classes_its_labeled_set_holds(digits):
    from pal.pretext import pretext_for
    from pal.strategies import QueryContext

    config = pal.make_config(**{**FAST, "missing_classes": ["3", "7"]})
    exp = pal.Experiment(config, data=digits)
    ctx = QueryContext(
        config=config,
        x=exp.x_train,
        labels=exp.task.labels,
        labeled=torch.as_tensor(exp.pool.labeled),
        unlabeled=torch.as_tensor(exp.pool.unlabeled),
        val=torch.as_tensor(exp.pool.val),
        num_classes=exp.num_classes,
        task_model=nn.Identity(),
        normalize=exp.normalize,
        augment_mode=exp.augment_mode,
        seed=1,
    )
    val = pretext_for("classification").validation_set(ctx)
    kept = exp.task.labels[val]
    assert not torch.isin(kept, torch.tensor([3, 7])).any()
    assert val.numel() == int((~torch.isin(exp.task.labels[ctx.val], torch.tensor([3, 7]))).sum())
    assert 0 < val.numel() < ctx.val.numel()


# ------------------------------------------------------------------ epochs_task_max
def _rounds_with_trainings(config, data):
    """Every round's record of ``config`` and the epochs of each task network it trained, in
    order (seen through the per-epoch progress callback)."""
    trainings: list[int] = []

    def progress(phase, epoch, epochs):
        if phase == "task" and epoch == 1:
            trainings.append(epochs)

    exp = pal.Experiment(config, data=data, progress=progress)
    out = []
    for record in exp.rounds():
        out.append((record, list(trainings)))
        trainings.clear()
    return out


def _same_numbers(record: RoundRecord) -> dict:
    """The record without its wall times."""
    return {k: v for k, v in record.to_dict().items() if "seconds" not in k}


def test_epoch_schedule_doubles_up_to_the_cap():
    assert epoch_schedule(30, None) == [30]
    assert epoch_schedule(30, 30) == [30]
    assert epoch_schedule(30, 100) == [30, 60, 100]
    assert epoch_schedule(3, 12) == [3, 6, 12]


def test_epochs_task_max_must_be_null_or_at_least_epochs_task():
    message = "epochs_task_max: must be >= epochs_task (4) or null, got 3"
    with pytest.raises(ConfigError, match=re.escape(message)):
        pal.make_config(epochs_task=4, epochs_task_max=3)
    with pytest.raises(ConfigError, match="epochs_task_max"):
        pal.make_config(epochs_task_max=8).replace(epochs_task=9)
    assert pal.make_config(epochs_task=4, epochs_task_max=4).epochs_task_max == 4
    assert pal.make_config().epochs_task_max is None


def test_an_underfit_task_network_is_trained_again_with_doubled_epochs_until_it_fits(digits):
    threshold = 0.5  # two epochs on 40 digits (four SGD steps) stay far below it
    kw = {**FAST, "strategy": "random", "rounds": 0, "epochs_task": 2, "fit_threshold": threshold}
    config = pal.make_config(**kw, epochs_task_max=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnderfitWarning)  # the kept network fits: no warning
        [(record, trainings)] = _rounds_with_trainings(config, digits)
    assert record.task_fit_attempts >= 2
    assert trainings == epoch_schedule(2, 32)[: record.task_fit_attempts]
    assert record.task_epochs == trainings[-1] < 32  # it fit before the cap
    assert record.train_accuracy >= threshold and record.underfit == []
    assert 1 <= record.task_epoch <= record.task_epochs
    metrics = record.metrics()
    assert metrics["task_epochs"] == record.task_epochs
    assert metrics["task_fit_attempts"] == record.task_fit_attempts

    # the kept network is the one a round trains with epochs_task set to its epochs, and the
    # doubling before it was below the threshold
    [(kept, once)] = _rounds_with_trainings(
        pal.make_config(**{**kw, "epochs_task": record.task_epochs}), digits
    )
    assert once == [record.task_epochs]
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "task_epoch"):
        assert getattr(kept, key) == getattr(record, key), key
    with pytest.warns(UnderfitWarning):
        [(before, _)] = _rounds_with_trainings(
            pal.make_config(**{**kw, "epochs_task": trainings[-2]}), digits
        )
    assert before.train_accuracy < threshold


def test_a_task_network_underfit_at_the_cap_is_kept_recorded_and_reported(digits):
    config = pal.make_config(
        **{**FAST, "strategy": "random", "rounds": 1, "epochs_task": 1},
        epochs_task_max=3,
        fit_threshold=1.0,  # a few SGD steps never fit 40 digits perfectly
    )
    with pytest.warns(UnderfitWarning, match="train_accuracy"):
        first = _rounds_with_trainings(config, digits)
    for record, trainings in first:
        assert trainings == [1, 2, 3]
        assert (record.task_epochs, record.task_fit_attempts) == (3, 3)
        assert record.train_accuracy < 1.0 and "train_accuracy" in record.underfit
    table = ExperimentResult(config, [r for r, _ in first], list(map(str, range(10)))).table()
    assert "epochs (trainings)" in table.splitlines()[0] and "3 (3)" in table

    with pytest.warns(UnderfitWarning):
        second = _rounds_with_trainings(config, digits)  # the same seed: the same rounds
    assert [_same_numbers(r) for r, _ in second] == [_same_numbers(r) for r, _ in first]


def test_without_epochs_task_max_each_round_trains_once_for_epochs_task(digits):
    kw = {**FAST, "strategy": "random", "rounds": 1, "epochs_task": 2, "fit_threshold": 0.0}
    off = _rounds_with_trainings(pal.make_config(**kw), digits)
    for record, trainings in off:
        assert trainings == [2]
        assert (record.task_epochs, record.task_fit_attempts) == (2, 1)
    table = ExperimentResult(pal.make_config(**kw), [r for r, _ in off], []).table()
    assert "epochs (trainings)" not in table
    # on, with a network that fits the threshold at once: the same rounds, number for number
    # (the training-set accuracy its fit check measured is the one the round records)
    on = _rounds_with_trainings(pal.make_config(**kw, epochs_task_max=8), digits)
    assert [t for _, t in on] == [[2], [2]]
    assert [_same_numbers(r) for r, _ in on] == [_same_numbers(r) for r, _ in off]
