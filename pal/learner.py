"""One active-learning round, whoever labels: train and measure the task network, check its fit,
choose the next query.

A :class:`Learner` is what every round on one pool shares: the runtime (device, precision,
memory format), the task with its annotations on the device, the images placed (resident or
streamed), the :class:`~pal.training.Normalizer` and the augmentation. Its steps are the round:
:meth:`Learner.train` (a fresh task network on ``D_L``, measured on the validation and test
sets), :meth:`Learner.underfit` (the fit check), :meth:`Learner.confidence` (the task network's
confidence on the images still unlabeled: a stopping signal, :mod:`pal.stopping`) and
:meth:`Learner.choose` (the strategy's query on the :class:`~pal.strategies.QueryContext` of
:meth:`Learner.context`).

Both loops run on it: :class:`pal.loop.Experiment` with the oracle's labels (small-text's
``PoolBasedActiveLearner.query()`` / ``update()``) and :func:`pal.labeling.rounds.next_batch`
with a person's, so a round is the same code whoever answers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from pal.config import Config
from pal.data import ImageData
from pal.placement import place
from pal.pool import Pool, draw_candidates
from pal.rng import derive_seed
from pal.strategies import Query, QueryContext, Strategy, cpu_bf16_proven
from pal.tasks import Task
from pal.training import Normalizer, ProgressFn, Runtime, warn_underfit


@dataclasses.dataclass
class Trained:
    """A round's task network and what it measured.

    Attributes:
        model: the task network trained on ``D_L`` (``None`` with no label: a label-free round).
        train_accuracy / val_accuracy / test_accuracy: the task's metric on ``D_L`` (against the
            labels it trained on), the validation set and the test set (NaN: none).
        task_metrics: the task's further metrics (segmentation: ``test_miou``, ``test_iou/<c>``).
        task_epoch / task_epochs / task_fit_attempts: see :class:`pal.results.RoundRecord`.
        train_seconds / eval_seconds: training, and the measurements.
    """

    model: nn.Module | None
    train_accuracy: float = math.nan
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    task_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    task_epoch: int = 0
    task_epochs: int = 0
    task_fit_attempts: int = 1
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


class Learner:
    """The rounds of one pool (see the module docstring).

    Args:
        config: the round's config.
        data: the images; ``data.x_train`` indexed by dataset index.
        task: the task (labels, network, metric), not yet on a device.
        pool: the :class:`~pal.pool.Pool` as it starts; its images set the
            :class:`~pal.training.Normalizer`'s statistics.
        missing_class_ids: classes missing from the initial pool (``int64 [M]``).
        progress: per-epoch callback ``(phase, epoch, epochs)``.
    """

    def __init__(
        self,
        config: Config,
        data: ImageData,
        task: Task,
        pool: Pool,
        missing_class_ids: np.ndarray,
        progress: ProgressFn | None = None,
    ):
        self.config, self.data, self.task, self.progress = config, data, task, progress
        self.runtime = Runtime.from_config(config, task.kind, cpu_bf16_proven())
        device = self.runtime.device
        # moved to the device once (or, above the device budget, streamed from the host); every
        # batch is gathered by index
        self.placement, (self.x, self.x_test) = place(
            config, device, data.x_train, data.x_test, pool_size=len(pool.unlabeled)
        )
        task.to(device, pool.labeled, missing_class_ids)
        self.normalize = Normalizer(data.x_train, self.runtime.memory_format, rows=pool.indices)
        self.normalize = self.normalize.to(device)
        self.augment_mode = data.default_augment if config.augment == "auto" else config.augment

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def train(self, labeled: np.ndarray, val: np.ndarray, r: int) -> Trained:
        """Train a fresh task network on ``D_L = labeled`` for round ``r`` (every draw from
        ``(seed, "task", r)``) and measure it; under the runtime's autocast."""
        task, x, normalize = self.task, self.x, self.normalize
        with self.runtime.autocast():
            start = time.perf_counter()
            model, fitted = task.train(
                x, labeled, val, r, normalize, self.augment_mode, self.progress
            )
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            val_metric, test_metric, task_metrics = task.evaluate(
                model, x, val, self.x_test, normalize
            )
            train_metric = fitted.train_metric  # measured by epochs_task_max's fit check, if on
            if train_metric is None:
                train_metric = task.score(model, x, labeled, normalize)
            eval_seconds = time.perf_counter() - start
        return Trained(
            model,
            train_metric,
            val_metric,
            test_metric,
            task_metrics,
            fitted.report.chosen_epoch,
            fitted.epochs,
            fitted.attempts,
            train_seconds,
            eval_seconds,
        )

    def underfit(
        self,
        r: int,
        train_accuracy: float,
        query_metrics: Mapping[str, float],
        fit_keys: Iterable[str],
    ) -> list[str]:
        """The training-set metrics of round ``r`` below ``fit_threshold`` (each warns an
        :class:`~pal.training.UnderfitWarning` naming the ``--set`` keys that would help, and,
        on a manifest's pool, the labeling preset for its images when the config lacks its
        keys): the task network's ``train_accuracy`` and the query's ``fit_keys`` among its
        ``query_metrics`` (the networks the strategy trained)."""
        from pal.labeling.presets import PRESETS, preset_name_for

        cfg, preset = self.config, None
        if cfg.dataset.startswith("manifest:"):
            name = preset_name_for(*self.data.x_train.shape[1:])
            keys = PRESETS[name].keys
            preset = name if any(getattr(cfg, k) != v for k, v in keys.items()) else None
        fits = [("train_accuracy", train_accuracy)]
        fits += [(k, float(query_metrics.get(k, math.nan))) for k in fit_keys]
        threshold = self.task.fit_threshold
        return [k for k, v in fits if warn_underfit(k, v, threshold, r, cfg, preset)]

    def context(
        self,
        pool: Pool,
        model: nn.Module | None,
        r: int,
        config: Config | None = None,
    ) -> QueryContext:
        """What a strategy sees when it chooses query ``r``: ``pool`` as it stands (its
        unlabeled images, or their seeded ``candidate_pool`` drawn for ``r``), the task network,
        the seed of ``(seed, "query", r)``."""
        cfg = config or self.config
        device = self.device
        candidates = draw_candidates(pool.unlabeled, cfg.candidate_pool, cfg.seed, r)
        return QueryContext(
            config=cfg,
            x=self.x,
            labels=self.task.labels,
            labeled=torch.as_tensor(pool.labeled, device=device),
            unlabeled=torch.as_tensor(candidates, device=device),
            val=torch.as_tensor(pool.val, device=device),
            num_classes=self.task.num_classes,
            task_model=model,
            task=self.task.kind,
            normalize=self.normalize,
            augment_mode=self.augment_mode,
            seed=derive_seed(cfg.seed, "query", r),
            progress=self.progress,
        )

    def choose(
        self, strategy: Strategy, ctx: QueryContext, n: int, label_free: bool = False
    ) -> tuple[Query, float]:
        """``strategy``'s query of ``n`` images of ``ctx`` (with ``label_free``, chosen with no
        label: :meth:`~pal.strategies.Strategy.query_label_free`) under the runtime's autocast,
        and its seconds."""
        start = time.perf_counter()
        with self.runtime.autocast():
            query = strategy.query_label_free(ctx, n) if label_free else strategy.query(ctx, n)
        return query, time.perf_counter() - start

    def confidence(
        self, model: nn.Module | None, images: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The task network's confidence on ``images`` (sorted dataset indices): per image its
        top-class probability (segmentation: the mean over pixels), ``float [U]``, and the
        predicted class (``int64 [U]``; ``None`` for segmentation). Empty without a network."""
        if model is None or len(images) == 0:
            return torch.empty(0), None
        idx = torch.as_tensor(images, device=self.device)
        with self.runtime.autocast():
            return self.task.confidence(model, self.x, idx, self.normalize)
