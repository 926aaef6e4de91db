"""The round loop, in one place: every entry point (``pal.run_experiment``, ``pal run``, a Tune
trial) drives an :class:`Experiment` one round at a time.

Round 0 trains the task network on the initial pool. Round ``r >= 1`` first adds the ``r``-th
query's samples (labelled by the oracle) and then trains the task network from scratch on ``D_L``.
The query for round ``r + 1`` is computed at the end of round ``r``, while that round's task network
is at hand, and kept in the state as ``pending``: so the state after a round (a few lists of ints)
is all a resumed run needs, and every random draw of a round derives from ``(seed, purpose,
round)``, a resumed run makes the same choices as one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from pal.config import Config, ConfigError
from pal.datasets import ImageData, load_dataset
from pal.results import ExperimentResult, RoundRecord
from pal.rng import derive_seed, numpy_rng
from pal.strategies import STRATEGIES, QueryContext, build_strategy, list_strategies
from pal.tasks import build_task
from pal.training import Normalizer, ProgressFn

RoundCallback = Callable[[RoundRecord, "Experiment"], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def resolve_speed(config: Config, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype (``None``: fp32) and the image memory format for ``device``.

    ``auto`` means bf16 autocast and channels-last on a CUDA GPU with bf16 support (Ampere and
    later), fp32 and contiguous elsewhere: on CPUs both cost more than they save.

    Raises:
        ConfigError: ``precision: ...`` for bf16 on a GPU without bf16 support.
    """
    gpu = device.type == "cuda"
    bf16_ok = not gpu or torch.cuda.is_bf16_supported()
    if config.precision == "bf16" and not bf16_ok:
        raise ConfigError("precision: this GPU has no bf16 support; use fp32 or auto")
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and gpu and bf16_ok)
    channels_last = config.memory_format == "channels_last" or (
        config.memory_format == "auto" and gpu
    )
    return (
        torch.bfloat16 if use_bf16 else None,
        torch.channels_last if channels_last else torch.contiguous_format,
    )


class Experiment:
    """An active-learning experiment as a resumable sequence of rounds.

    Everything the config can get wrong is checked in ``__init__``, before any training.

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
        self.device = resolve_device(config.device)
        if data is None:
            data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size)
        self.data = data
        self.task = build_task(config, data)
        if self.task.kind not in self.strategy.tasks:
            able = [n for n in list_strategies() if self.task.kind in STRATEGIES.get(n).tasks]
            raise ConfigError(
                f"strategy: {config.strategy!r} does not run on {self.task.kind} "
                f"({data.name}); strategies for {self.task.kind}: {able}"
            )
        self.classes = self.task.classes
        self.num_classes = self.task.num_classes
        self.augment_mode = data.default_augment if config.augment == "auto" else config.augment
        self._plan_pools()
        self.strategy.check_config(
            config, self.query_size, tuple(data.x_train.shape[-2:]), self.task.kind
        )

        # moved to the device once; every batch is gathered there by index
        self.x_train = data.x_train.to(self.device)
        self.x_test = data.x_test.to(self.device)
        self.task.to(self.device, self.labeled_indices(), self.missing_class_ids)
        self.autocast_dtype, memory_format = resolve_speed(config, self.device)
        self.normalize = Normalizer(data.x_train[self.pool], memory_format).to(self.device)
        self.task_model: nn.Module | None = None

    # ------------------------------------------------------------------ setup
    def _plan_pools(self) -> None:
        """Draw the pool, the validation set and the initial labeled pool; size the queries."""
        cfg, n_train = self.config, self.task.n_train
        rng = numpy_rng(cfg.seed, "pools")
        if cfg.pool_size is not None and cfg.pool_size > n_train:
            raise ConfigError(
                f"pool_size: must be <= the training split ({n_train}), got {cfg.pool_size}"
            )
        pool = np.arange(n_train)
        if cfg.pool_size is not None:
            pool = np.sort(rng.choice(n_train, cfg.pool_size, replace=False))
        if cfg.val_size >= len(pool):
            raise ConfigError(f"val_size: must be < the pool ({len(pool)}), got {cfg.val_size}")
        val = rng.choice(pool, cfg.val_size, replace=False)
        pool_rest = np.setdiff1d(pool, val)
        budget = len(pool_rest)
        self.initial_size = cfg.initial_size or max(1, round(cfg.initial_fraction * budget))
        self.query_size = cfg.query_size or max(1, round(cfg.query_fraction * budget))
        need = self.initial_size + cfg.rounds * self.query_size
        if self.initial_size > budget:
            raise ConfigError(
                f"initial_size: {self.initial_size} is more than the pool of {budget} "
                "(training split less the validation set)"
            )
        if need > budget:
            raise ConfigError(
                f"query_size: initial pool {self.initial_size} + rounds {cfg.rounds} x query "
                f"{self.query_size} = {need} is more than the pool of {budget}; lower rounds, "
                "query_size/query_fraction or initial_size/initial_fraction"
            )
        missing = self._missing_class_ids()
        eligible = self.task.eligible_initial(pool_rest, missing)
        if len(eligible) < self.initial_size:
            raise ConfigError(
                f"missing_classes: {list(cfg.missing_classes)} leave {len(eligible)} samples for "
                f"an initial pool of {self.initial_size}"
            )
        self.pool = pool
        self.val = np.sort(val)
        self.missing_class_ids = missing
        self.state: dict[str, Any] = {
            "round": -1,
            "labeled": rng.choice(eligible, self.initial_size, replace=False).tolist(),
            "pending": None,
        }

    def _missing_class_ids(self) -> np.ndarray:
        ids = []
        for name in self.config.missing_classes:
            if name in self.classes:
                ids.append(self.classes.index(name))
            elif name.lstrip("-").isdigit() and 0 <= int(name) < self.num_classes:
                ids.append(int(name))
            else:
                raise ConfigError(
                    f"missing_classes: no class {name!r} in {self.config.dataset}; "
                    f"classes are {self.classes} (or their indices 0..{self.num_classes - 1})"
                )
        return np.array(sorted(set(ids)), dtype=np.int64)

    # ------------------------------------------------------------------ state
    @property
    def rounds_done(self) -> int:
        """Number of finished rounds (``R + 1`` when the experiment is complete)."""
        return self.state["round"] + 1

    @property
    def n_pool(self) -> int:
        """``|D_L| + |D_U|``: the pool less the validation set (the labelling budget)."""
        return len(self.pool) - len(self.val)

    @property
    def finished(self) -> bool:
        return self.rounds_done > self.config.rounds

    def labeled_indices(self) -> np.ndarray:
        return np.asarray(self.state["labeled"], dtype=np.int64)

    def unlabeled_indices(self) -> np.ndarray:
        taken = np.concatenate([self.labeled_indices(), self.val])
        return np.setdiff1d(self.pool, taken)

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers: what a checkpoint needs to resume after the last round."""
        labeled = self.labeled_indices()
        return {
            "round": self.state["round"],
            "labeled": labeled.tolist(),
            "oracle_labels": self.task.oracle_labels(labeled),
            "pending": self.state["pending"],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        labeled = np.asarray(state["labeled"], dtype=np.int64)
        stored = state.get("oracle_labels")
        if stored is not None and self.task.oracle_labels(labeled) != list(stored):
            raise ValueError("checkpoint's oracle labels differ from this config's (seed changed?)")
        self.state = {
            "round": int(state["round"]),
            "labeled": labeled.tolist(),
            "pending": state["pending"],
        }

    # ------------------------------------------------------------------ rounds
    def run_round(self) -> RoundRecord:
        """Run the next round and return its record."""
        if self.finished:
            raise RuntimeError(f"all {self.config.rounds} rounds are done")
        cfg = self.config
        r = self.state["round"] + 1
        start = time.perf_counter()
        pending = self.state["pending"] or {"indices": [], "metrics": {}, "seconds": 0.0}
        selected = np.asarray(pending["indices"], dtype=np.int64)
        if r > 0 and len(selected) != self.query_size:
            raise RuntimeError(f"round {r} has no pending query in the state")
        self.state["labeled"] = self.state["labeled"] + selected.tolist()
        labeled = self.labeled_indices()

        t_train = time.perf_counter()
        with self.autocast():
            self.task_model = self.task.train(
                self.x_train, labeled, r, self.normalize, self.augment_mode, self.progress
            )
            train_seconds = time.perf_counter() - t_train
            t_eval = time.perf_counter()
            val_acc, test_acc, task_metrics = self.task.evaluate(
                self.task_model, self.x_train, self.val, self.x_test, self.normalize
            )
            eval_seconds = time.perf_counter() - t_eval

        record = RoundRecord(
            round=r,
            n_labeled=len(labeled),
            test_accuracy=test_acc,
            val_accuracy=val_acc,
            query_class_rates=self.task.class_rates(selected),
            labeled_class_counts=self.task.class_counts(labeled),
            n_noisy_labels=self.task.n_noisy(labeled),
            selected=selected.tolist(),
            seconds=0.0,
            query_seconds=float(pending["seconds"]),
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            query_metrics=dict(pending["metrics"]),
            n_pool=self.n_pool,
            missing_class_share=self.task.missing_share(selected, self.missing_class_ids),
            task_metrics=task_metrics,
        )
        with self.autocast():
            next_pending = self._query(r + 1) if r < cfg.rounds else None
        record.seconds = float(pending["seconds"]) + time.perf_counter() - start
        if next_pending is not None:
            record.seconds -= next_pending["seconds"]
        self.state["round"] = r
        self.state["pending"] = next_pending
        return record

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the experiment's device when ``precision`` resolves to bf16 (a
        no-op context otherwise); scores and losses are reduced in fp32 inside it."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        )

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

    def _query(self, next_round: int) -> dict[str, Any]:
        start = time.perf_counter()
        ctx = QueryContext(
            config=self.config,
            x=self.x_train,
            labels=self.task.labels,
            labeled=torch.as_tensor(self.labeled_indices(), device=self.device),
            unlabeled=torch.as_tensor(self.unlabeled_indices(), device=self.device),
            num_classes=self.num_classes,
            task_model=self.task_model,
            task=self.task.kind,
            normalize=self.normalize,
            augment_mode=self.augment_mode,
            seed=derive_seed(self.config.seed, "query", next_round),
            progress=self.progress,
        )
        query = self.strategy.query(ctx, self.query_size)
        return {
            "indices": query.indices.cpu().tolist(),
            "metrics": {k: float(v) for k, v in query.metrics.items()},
            "seconds": time.perf_counter() - start,
        }

    def result(self, records: list[RoundRecord]) -> ExperimentResult:
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
