"""The round loop, in one place: every entry point (``pal.run_experiment``, ``pal run``, a Tune
trial) drives an :class:`Experiment` one round at a time. A round's steps (train and measure,
the fit check, the stopping signals, the query) are :class:`pal.learner.Learner`'s, the same
steps ``pal label next`` runs with a person's labels.

Round 0 trains the task network on the initial pool. Round ``r >= 1`` first adds the ``r``-th
query's samples (labelled by the oracle) and then trains the task network from scratch on ``D_L``.
The query for round ``r + 1`` is computed at the end of round ``r``, while that round's task network
is at hand, and kept in the state as ``pending``: so the state after a round (a few lists of
numbers) is all a resumed run needs, and every random draw of a round derives from ``(seed,
purpose, round)``, a resumed run makes the same choices as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from pal.config import Config, ConfigError
from pal.data import DataError, ImageData, load_dataset
from pal.learner import Learner
from pal.pool import PendingQuery, Pool, PoolPlan, draw_pool
from pal.results import ExperimentResult, RoundRecord
from pal.stopping import cohen_kappa, plateau, stop_set
from pal.strategies import STRATEGIES, QueryContext, build_strategy, list_strategies
from pal.tasks import Task, build_task
from pal.training import ProgressFn

RoundCallback = Callable[[RoundRecord, "Experiment"], None]


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    """What :func:`plan_experiment` loaded and decided: the data, its task, the ids of the
    classes missing from the initial pool, and the drawn pool with its sizes."""

    data: ImageData
    task: Task
    missing_class_ids: np.ndarray
    pools: PoolPlan


def plan_experiment(config: Config, data: ImageData | None = None) -> ExperimentPlan:
    """Everything about ``config`` that needs the data, checked without training or a device.

    Loads the dataset (on the host: the whole training and test split, decoded once and
    cached for file formats), refuses one with unlabeled training images (the oracle answers
    with every image's label), builds the task, checks the strategy runs on it, draws and sizes
    the pools (the validation set is the dataset's own when it declares one), and lets the
    strategy check its settings against the query size and the image size. :class:`Experiment`
    starts with it; ``pal sweep`` runs it on the driver so that a config every trial would fail
    on (a missing file, pools that do not fit) stops the sweep before any trial starts.

    Raises:
        ConfigError: naming the field and what is allowed.
    """
    strategy = STRATEGIES.get(config.strategy)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size)
    if data.n_unknown:
        raise DataError(
            f"dataset: {data.name} has {data.n_unknown:,} images without a label; pal run, "
            "sweep and ablate simulate the labeler with every image's label: label them with "
            "'pal label', or give every row a label"
        )
    task = build_task(config, data)
    if task.kind not in strategy.tasks:
        able = [n for n in list_strategies() if task.kind in STRATEGIES.get(n).tasks]
        raise ConfigError(
            f"strategy: {config.strategy!r} does not run on {task.kind} "
            f"({data.name}); strategies for {task.kind}: {able}"
        )
    missing = task.class_ids(config.missing_classes, "missing_classes")
    pools = draw_pool(
        config,
        task.n_train,
        lambda rest: task.eligible_initial(rest, missing),
        task.oracle_labels,
        fixed_val=data.val_indices,
    )
    strategy.check_config(config, pools.query_size, tuple(data.x_train.shape[-2:]), task.kind)
    return ExperimentPlan(data, task, missing, pools)


class Experiment:
    """An active-learning experiment as a resumable sequence of rounds.

    Everything the config can get wrong is checked in ``__init__``, before any training.

    Attributes:
        pool: the :class:`pal.pool.Pool`: ``D_L``, ``D_U``, the validation set, the pending query.
        task: the :class:`pal.tasks.Task` (labels, task network, metric).
        runtime: the device, precision and memory format (:class:`pal.training.Runtime`).
        placement: where the images live (:class:`pal.placement.Placement`: resident on the
            device, or streamed from the host above ``device_budget_gb``).

    Args:
        config: a validated :class:`Config`.
        data: an already loaded dataset (default: load ``config.dataset``).
        progress: per-epoch callback ``(phase, epoch, epochs)``.
    """

    def __init__(
        self, config: Config, data: ImageData | None = None, progress: ProgressFn | None = None
    ):
        self.config = config
        self.progress = progress
        self.strategy = build_strategy(config)
        plan = plan_experiment(config, data)
        self.data, self.task, self.missing_class_ids = plan.data, plan.task, plan.missing_class_ids
        self.pool: Pool = plan.pools.pool
        self.initial_size, self.query_size = plan.pools.initial_size, plan.pools.query_size
        self.classes = self.task.classes
        self.num_classes = self.task.num_classes
        self.learner = Learner(
            config, self.data, self.task, self.pool, self.missing_class_ids, progress
        )
        self.runtime, self.placement = self.learner.runtime, self.learner.placement
        self.x_train, self.x_test = self.learner.x, self.learner.x_test
        self.normalize, self.augment_mode = self.learner.normalize, self.learner.augment_mode
        self.round = -1  # the last finished round
        self.val_history: list[float] = []  # the validation metric of every finished round
        # the last task network's classes on the stop set (pal.stopping: the kappa's other side)
        self.stop_predictions: list[int] | None = None
        self.task_model: nn.Module | None = None

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        """Where the images and networks live (``runtime.device``)."""
        return self.runtime.device

    @property
    def rounds_done(self) -> int:
        """Number of finished rounds (``R + 1`` when the experiment is complete)."""
        return self.round + 1

    @property
    def finished(self) -> bool:
        """Whether every round (``rounds + 1`` of them) is done."""
        return self.rounds_done > self.config.rounds

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers: what a checkpoint needs to resume after the last round
        (the round, the validation history and the :class:`~pal.pool.Pool`'s state)."""
        state = {
            "round": self.round,
            "val_history": list(self.val_history),
            "stop_predictions": self.stop_predictions,
        }
        return {**state, **self.pool.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the round :meth:`state_dict` was taken at.

        Raises:
            ValueError: the state's oracle labels differ from this config's.
        """
        self.pool.load_state_dict(state)
        self.round = int(state["round"])
        self.val_history = [float(v) for v in state.get("val_history", [])]
        self.stop_predictions = state.get("stop_predictions")

    # ------------------------------------------------------------------ rounds
    def run_round(self) -> RoundRecord:
        """Run the next round and return its record."""
        if self.finished:
            raise RuntimeError(f"all {self.config.rounds} rounds are done")
        cfg = self.config
        r = self.round + 1
        start = time.perf_counter()
        pending = self.pool.pending or PendingQuery(())
        selected = np.asarray(pending.indices, dtype=np.int64)
        if r > 0 and len(selected) != self.query_size:
            raise RuntimeError(f"round {r} has no pending query in the state")
        self.pool.label(selected)
        self.pool.pending = None
        labeled = self.pool.labeled

        trained = self.learner.train(labeled, self.pool.val, r)
        self.task_model = trained.model
        underfit = self.learner.underfit(
            r, trained.train_accuracy, pending.metrics, pending.fit_keys
        )
        history = [*self.val_history, trained.val_accuracy]
        finite = [v for v in history if not math.isnan(v)]
        ctx = self.query_context(r + 1)  # what the next query scores, and the confidence is on
        confidence, _ = self.learner.confidence(trained.model, ctx.unlabeled)
        signal = plateau(history, len(self.pool.val))
        kappa, self.stop_predictions = self._kappa(trained.model)

        record = RoundRecord(
            round=r,
            n_labeled=len(labeled),
            test_accuracy=trained.test_accuracy,
            val_accuracy=trained.val_accuracy,
            query_class_rates=self.task.class_rates(selected),
            labeled_class_counts=self.task.class_counts(labeled),
            n_noisy_labels=self.task.n_noisy(labeled),
            selected=selected.tolist(),
            seconds=0.0,
            query_seconds=pending.seconds,
            train_seconds=trained.train_seconds,
            eval_seconds=trained.eval_seconds,
            query_metrics=dict(pending.metrics),
            n_pool=self.pool.n_budget,
            missing_class_share=self.task.missing_share(selected, self.missing_class_ids),
            task_metrics=trained.task_metrics,
            val_auc=sum(finite) / len(finite) if finite else math.nan,
            train_accuracy=trained.train_accuracy,
            task_epoch=trained.task_epoch,
            task_epochs=trained.task_epochs,
            task_fit_attempts=trained.task_fit_attempts,
            underfit=underfit,
            mean_confidence=float(confidence.mean()) if len(confidence) else math.nan,
            val_change=signal.change,
            val_plateau=signal.fired,
            kappa=kappa,
        )
        next_pending = self._query(ctx) if r < cfg.rounds else None
        record.seconds = pending.seconds + time.perf_counter() - start
        if next_pending is not None:
            record.seconds -= next_pending.seconds
        self.round = r
        self.val_history.append(trained.val_accuracy)
        self.pool.pending = next_pending
        return record

    def _kappa(self, model) -> tuple[float, list[int] | None]:
        """Cohen's kappa of ``model``'s classes on the stop set against the last round's
        (:mod:`pal.stopping`; NaN in the first round and for segmentation), and its classes."""
        stop = stop_set(self.pool.indices, self.config.seed)
        _, predicted = self.learner.confidence(model, stop)
        if predicted is None:
            return math.nan, None
        now = predicted.cpu().numpy()
        before = self.stop_predictions
        if before is None or len(before) != len(now):
            return math.nan, now.tolist()
        return cohen_kappa(np.asarray(before), now, self.task.num_classes), now.tolist()

    def rounds(self) -> Iterator[RoundRecord]:
        """Run the remaining rounds, yielding each record as it finishes."""
        while not self.finished:
            yield self.run_round()

    def run(self, callbacks: tuple[RoundCallback, ...] = ()) -> ExperimentResult:
        """Run the remaining rounds; ``callbacks`` see each record as its round finishes."""
        records = []
        for record in self.rounds():
            records.append(record)
            for callback in callbacks:
                callback(record, self)
        return self.result(records)

    def _query(self, ctx: QueryContext) -> PendingQuery:
        query, seconds = self.learner.choose(self.strategy, ctx, self.query_size)
        return PendingQuery(
            tuple(query.indices.cpu().tolist()),
            {k: float(v) for k, v in query.metrics.items()},
            seconds,
            tuple(query.fit_keys),
        )

    def query_context(self, next_round: int) -> QueryContext:
        """What the strategy sees when it chooses the query for round ``next_round``: the
        pools as they stand, this round's task network, the query's seed."""
        return self.learner.context(self.pool, self.task_model, next_round)

    def result(self, records: list[RoundRecord]) -> ExperimentResult:
        """``records`` with this experiment's config, classes, device and metric name."""
        return ExperimentResult(
            self.config, records, self.classes, str(self.device), metric=self.task.metric
        )


def run(
    config: Config,
    data: ImageData | None = None,
    progress: ProgressFn | None = None,
    callbacks: tuple[RoundCallback, ...] = (),
) -> ExperimentResult:
    """Run a whole experiment; ``callbacks`` see each record as its round finishes."""
    return Experiment(config, data, progress).run(callbacks)
