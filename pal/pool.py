"""The active-learning pool: which samples are labeled, which may be queried, and what is pending.

A :class:`Pool` is the labeling state of one experiment, as plain dataset indices of the training
split (baal's ``ActiveLearningDataset`` is the model: :meth:`Pool.label`, :attr:`Pool.labeled`,
:attr:`Pool.unlabeled`, :meth:`Pool.state_dict`):

- ``indices``: the pool drawn from the training split (all of it unless ``pool_size``);
- ``val``: the held-out validation samples, labelled by the oracle, never queried (drawn, or
  the dataset's own validation split when it declares one);
- ``labeled``: ``D_L`` in the order it was labeled (the initial pool first);
- ``unlabeled``: ``D_U``, the pool less ``val``, ``D_L`` and ``closed``;
- ``closed``: pool samples that may not be queried although unlabeled (a labeling project's
  skipped images and those a batch offered; none in an experiment);
- ``pending``: a :class:`PendingQuery`, the query chosen at the end of a round and labeled at the
  start of the next one.

:func:`draw_pool` sizes the initial pool and the queries from the config and draws the pool, the
validation set and the initial pool from ``(seed, "pools")``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from pal.config import Config, ConfigError
from pal.rng import numpy_rng

OracleLabels = Callable[[np.ndarray], "list[int] | None"]


@dataclasses.dataclass(frozen=True)
class PendingQuery:
    """A query chosen but not yet labeled.

    Attributes:
        indices: dataset indices in the order chosen.
        metrics: the strategy's query metrics (plain floats).
        seconds: how long the query took.
        fit_keys: the ``metrics`` that measure how a network the strategy trained fits its
            training set (held to ``fit_threshold`` like the task network).
    """

    indices: tuple[int, ...]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    fit_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint: ``{"indices", "metrics", "seconds", "fit_keys"}``."""
        return {
            "indices": list(self.indices),
            "metrics": dict(self.metrics),
            "seconds": self.seconds,
            "fit_keys": list(self.fit_keys),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any] | None) -> PendingQuery | None:
        """The query :meth:`to_dict` stored (``None`` for none)."""
        if state is None:
            return None
        return cls(
            tuple(int(i) for i in state["indices"]),
            {k: float(v) for k, v in state["metrics"].items()},
            float(state["seconds"]),
            tuple(state.get("fit_keys", ())),
        )


class Pool:
    """The labeling state of an experiment, by dataset index (see the module docstring).

    Args:
        indices: ``int64 [P]`` the pool, sorted.
        val: ``int64 [V]`` the validation samples, sorted: a subset of ``indices`` in an
            experiment; a labeling project's ``val`` split, beside its pool.
        labeled: ``int64 [L]`` the initial ``D_L``.
        oracle_labels: the oracle's labels of some indices, what a checkpoint stores to detect a
            changed oracle (``None`` from it: nothing to compare).
        closed: ``int64 [C]`` unlabeled pool samples never to query.
    """

    def __init__(
        self,
        indices: np.ndarray,
        val: np.ndarray,
        labeled: np.ndarray,
        oracle_labels: OracleLabels | None = None,
        closed: np.ndarray | None = None,
    ):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.val = np.asarray(val, dtype=np.int64)
        self.closed = np.asarray(closed if closed is not None else [], dtype=np.int64)
        self._labeled: list[int] = np.asarray(labeled, dtype=np.int64).tolist()
        self._oracle_labels = oracle_labels
        self.pending: PendingQuery | None = None

    @property
    def labeled(self) -> np.ndarray:
        """``int64 [L]``: ``D_L`` in the order it was labeled."""
        return np.asarray(self._labeled, dtype=np.int64)

    @property
    def unlabeled(self) -> np.ndarray:
        """``int64 [U]``: ``D_U``, sorted: the pool less the validation set, ``D_L`` and the
        closed samples."""
        return np.setdiff1d(self.indices, np.concatenate([self.labeled, self.val, self.closed]))

    @property
    def n_budget(self) -> int:
        """The pool less the validation set (the labeling budget)."""
        return len(np.setdiff1d(self.indices, self.val))

    def label(self, ids: np.ndarray | list[int]) -> None:
        """Move ``ids`` from ``D_U`` to ``D_L`` (appended in the order given).

        Raises:
            ValueError: an id that is not in ``D_U`` (labeled already, validation, outside the
                pool) or given twice.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids) or not np.isin(ids, self.unlabeled).all():
            raise ValueError("can only label unlabeled pool samples, each once")
        self._labeled += ids.tolist()

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers: ``labeled``, ``oracle_labels`` and ``pending``."""
        labeled = self.labeled
        oracle = self._oracle_labels(labeled) if self._oracle_labels else None
        return {
            "labeled": labeled.tolist(),
            "oracle_labels": oracle,
            "pending": self.pending.to_dict() if self.pending else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: the stored oracle labels differ from this pool's oracle's (a checkpoint of
                another config or seed).
        """
        labeled = np.asarray(state["labeled"], dtype=np.int64)
        stored = state.get("oracle_labels")
        oracle = self._oracle_labels
        if stored is not None and oracle is not None and oracle(labeled) != list(stored):
            raise ValueError("checkpoint's oracle labels differ from this config's (seed changed?)")
        self._labeled = labeled.tolist()
        self.pending = PendingQuery.from_dict(state["pending"])


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """What :func:`draw_pool` decided: the pool and the sizes of the initial pool and queries."""

    pool: Pool
    initial_size: int
    query_size: int


def draw_pool(
    config: Config,
    n_train: int,
    eligible_initial: Callable[[np.ndarray], np.ndarray],
    oracle_labels: OracleLabels | None = None,
    fixed_val: np.ndarray | None = None,
) -> PoolPlan:
    """Draw the pool, the validation set and the initial labeled pool; size the queries.

    Without ``fixed_val``, ``pool_size`` images are drawn from the training split (all of it
    when null) and ``val_size`` of them become the validation set, so the labeling budget is
    ``pool_size - val_size``. With ``fixed_val`` (a dataset's declared validation split),
    those images are the validation set, ``val_size`` is not used, and ``pool_size`` counts the
    images drawn from the rest of the training split (all of the rest when null): the labeling
    budget is ``pool_size`` and the pool holds the validation images besides.

    Args:
        config: ``pool_size``, ``val_size``, ``initial_*``, ``query_*``, ``rounds``, ``seed``.
        n_train: samples in the training split.
        eligible_initial: the candidates (dataset indices) the initial pool may come from
            (classification leaves out the ``missing_classes``).
        oracle_labels: see :class:`Pool`.
        fixed_val: ``int64 [V]`` dataset indices of the validation set, when the dataset
            declares one (:attr:`pal.data.ImageData.val_indices`).

    Raises:
        ConfigError: naming the field, when the sizes do not fit the training split.
    """
    cfg = config
    rng = numpy_rng(cfg.seed, "pools")
    if fixed_val is not None:
        val = np.unique(np.asarray(fixed_val, dtype=np.int64))
        rest = np.setdiff1d(np.arange(n_train), val)
        if cfg.pool_size is not None:
            if cfg.pool_size > len(rest):
                raise ConfigError(
                    f"pool_size: must be <= the training split less the dataset's own "
                    f"validation split ({n_train} - {len(val)} = {len(rest)}), got {cfg.pool_size}"
                )
            rest = np.sort(rng.choice(rest, cfg.pool_size, replace=False))
        indices = np.union1d(rest, val)
    else:
        if cfg.pool_size is not None and cfg.pool_size > n_train:
            raise ConfigError(
                f"pool_size: must be <= the training split ({n_train}), got {cfg.pool_size}"
            )
        indices = np.arange(n_train)
        if cfg.pool_size is not None:
            indices = np.sort(rng.choice(n_train, cfg.pool_size, replace=False))
        if cfg.val_size >= len(indices):
            raise ConfigError(f"val_size: must be < the pool ({len(indices)}), got {cfg.val_size}")
        val = rng.choice(indices, cfg.val_size, replace=False)
        rest = np.setdiff1d(indices, val)
    budget = len(rest)
    initial_size = cfg.initial_size or max(1, round(cfg.initial_fraction * budget))
    query_size = cfg.query_size or max(1, round(cfg.query_fraction * budget))
    need = initial_size + cfg.rounds * query_size
    if initial_size > budget:
        raise ConfigError(
            f"initial_size: {initial_size} is more than the pool of {budget} "
            "(training split less the validation set)"
        )
    if need > budget:
        raise ConfigError(
            f"query_size: initial pool {initial_size} + rounds {cfg.rounds} x query "
            f"{query_size} = {need} is more than the pool of {budget}; lower rounds, "
            "query_size/query_fraction or initial_size/initial_fraction"
        )
    if cfg.candidate_pool is not None and cfg.candidate_pool < query_size:
        raise ConfigError(
            f"candidate_pool: must be >= the query size ({query_size}) or null, "
            f"got {cfg.candidate_pool}"
        )
    eligible = eligible_initial(rest)
    if len(eligible) < initial_size:
        raise ConfigError(
            f"missing_classes: {list(cfg.missing_classes)} leave {len(eligible)} samples for "
            f"an initial pool of {initial_size}"
        )
    initial = rng.choice(eligible, initial_size, replace=False)
    return PoolPlan(Pool(indices, np.sort(val), initial, oracle_labels), initial_size, query_size)


def draw_candidates(unlabeled: np.ndarray, size: int | None, seed: int, r: int) -> np.ndarray:
    """The unlabeled images query ``r`` scores: all of ``unlabeled`` (sorted dataset indices)
    when ``size`` (``candidate_pool``) is null or not smaller, else a sorted random subset of
    ``size`` of them drawn from ``(seed, "candidates", r)`` (baal's ``max_sample``: for pools
    too big to score whole every round)."""
    if size is None or size >= len(unlabeled):
        return unlabeled
    return np.sort(numpy_rng(seed, "candidates", r).choice(unlabeled, size, replace=False))
