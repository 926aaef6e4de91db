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

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pal.config import Config, ConfigError
from pal.datasets import ImageData, load_dataset
from pal.models import BACKBONES, TaskNet, build_backbone
from pal.results import ExperimentResult, RoundRecord
from pal.rng import derive_seed, numpy_rng, seeded_init, torch_generator
from pal.strategies import QueryContext, build_strategy
from pal.training import FitSpec, Normalizer, ProgressFn, accuracy, predict_logits, train_classifier

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


class Oracle:
    """The labeller, with simulated noise decided once per sample by the seed.

    With probability ``label_noise`` a sample's label is replaced by a uniformly drawn *different*
    class, so ``label_noise`` is the real flip rate. The answer for a sample is fixed for the whole
    experiment (asking twice gives the same label); the true labels are kept for logging.
    """

    def __init__(self, y_true: np.ndarray, num_classes: int, noise: float, seed: int):
        rng = numpy_rng(seed, "oracle")
        flip = rng.random(len(y_true)) < noise
        offset = rng.integers(1, max(num_classes, 2), len(y_true))
        self.labels = np.where(flip, (y_true + offset) % num_classes, y_true).astype(np.int64)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        return self.labels[indices]


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
        for field in ("task_backbone", "scoring_backbone"):
            BACKBONES.get(getattr(config, field), field)
        self.device = resolve_device(config.device)
        if data is None:
            data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size)
        self.data = data
        self.classes = list(data.classes)
        self.num_classes = len(self.classes)
        self.y_true = data.y_train.numpy().astype(np.int64)
        self.augment_mode = data.default_augment if config.augment == "auto" else config.augment
        self._plan_pools()
        self.strategy.check_config(config, self.query_size, tuple(data.x_train.shape[-2:]))
        self.oracle = Oracle(self.y_true, self.num_classes, config.label_noise, config.seed)

        # moved to the device once; every batch is gathered there by index
        self.x_train = data.x_train.to(self.device)
        self.x_test = data.x_test.to(self.device)
        self.y_test = data.y_test.to(self.device)
        self.autocast_dtype, memory_format = resolve_speed(config, self.device)
        self.normalize = Normalizer(data.x_train[self.pool], memory_format).to(self.device)
        self.labels = torch.as_tensor(self.oracle.labels, device=self.device)
        self.task_model: TaskNet | None = None

    # ------------------------------------------------------------------ setup
    def _plan_pools(self) -> None:
        """Draw the pool, the validation set and the initial labeled pool; size the queries."""
        cfg, n_train = self.config, len(self.y_true)
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
        eligible = pool_rest[~np.isin(self.y_true[pool_rest], missing)]
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
            "oracle_labels": self.oracle(labeled).tolist(),
            "pending": self.state["pending"],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        labeled = np.asarray(state["labeled"], dtype=np.int64)
        if "oracle_labels" in state and not np.array_equal(
            self.oracle(labeled), np.asarray(state["oracle_labels"])
        ):
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
            self.task_model = self._train_task(labeled, r)
            train_seconds = time.perf_counter() - t_train
            t_eval = time.perf_counter()
            val_acc, test_acc = self._evaluate()
            eval_seconds = time.perf_counter() - t_eval

        record = RoundRecord(
            round=r,
            n_labeled=len(labeled),
            test_accuracy=test_acc,
            val_accuracy=val_acc,
            query_class_rates=self._class_rates(selected),
            labeled_class_counts=self._class_counts(labeled),
            n_noisy_labels=int((self.oracle(labeled) != self.y_true[labeled]).sum()),
            selected=selected.tolist(),
            seconds=0.0,
            query_seconds=float(pending["seconds"]),
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            query_metrics=dict(pending["metrics"]),
            n_pool=self.n_pool,
            missing_class_share=self._missing_share(selected),
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

    def _train_task(self, labeled: np.ndarray, r: int) -> TaskNet:
        cfg = self.config
        channels, h, w = self.x_train.shape[1:]
        with seeded_init(cfg.seed, "task-init", r):
            model = TaskNet(
                build_backbone(cfg.task_backbone, channels, (h, w)),
                self.num_classes,
                dropout=cfg.dropout,
            )
        model.to(self.device, memory_format=self.normalize.memory_format)
        idx = torch.as_tensor(labeled, device=self.device)
        model.dropout.generator = torch_generator(self.device, cfg.seed, "task-dropout", r)
        train_classifier(
            model,
            self.x_train[idx],
            self.labels[idx],
            self.normalize,
            FitSpec.from_config(cfg, "task"),
            self.augment_mode,
            torch_generator(self.device, cfg.seed, "task", r),
            self.progress,
        )
        model.dropout.generator = None
        return model

    def _evaluate(self) -> tuple[float, float]:
        bs = self.config.eval_batch_size
        test = accuracy(
            predict_logits(self.task_model, self.x_test, self.normalize, bs), self.y_test
        )
        if len(self.val) == 0:
            return math.nan, test
        val_idx = torch.as_tensor(self.val, device=self.device)
        logits = predict_logits(self.task_model, self.x_train[val_idx], self.normalize, bs)
        return accuracy(logits, self.labels[val_idx]), test

    def _query(self, next_round: int) -> dict[str, Any]:
        start = time.perf_counter()
        ctx = QueryContext(
            config=self.config,
            x=self.x_train,
            labels=self.labels,
            labeled=torch.as_tensor(self.labeled_indices(), device=self.device),
            unlabeled=torch.as_tensor(self.unlabeled_indices(), device=self.device),
            num_classes=self.num_classes,
            task_model=self.task_model,
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

    def _class_counts(self, indices: np.ndarray) -> dict[str, int]:
        counts = np.bincount(self.y_true[indices], minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def _class_rates(self, indices: np.ndarray) -> dict[str, float]:
        if len(indices) == 0:
            return {}
        counts = self._class_counts(indices)
        return {name: c / len(indices) for name, c in counts.items()}

    def _missing_share(self, indices: np.ndarray) -> float:
        if len(indices) == 0 or len(self.missing_class_ids) == 0:
            return math.nan
        return float(np.isin(self.y_true[indices], self.missing_class_ids).mean())

    def result(self, records: list[RoundRecord]) -> ExperimentResult:
        return ExperimentResult(self.config, records, self.classes, str(self.device))


def run(
    config: Config,
    data: ImageData | None = None,
    progress: ProgressFn | None = None,
    callbacks: tuple[RoundCallback, ...] = (),
) -> ExperimentResult:
    """Run a whole experiment; ``callbacks`` see each record as its round finishes."""
    return Experiment(config, data, progress).run(callbacks)
