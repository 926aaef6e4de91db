"""pal: Pretext-based Active Learning, and the baselines and settings it is compared in.

>>> import pal
>>> result = pal.run_experiment(dataset="digits", strategy="pal", rounds=3, seed=0)
>>> [(r.round, r.n_labeled, r.test_accuracy) for r in result.rounds]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pal.config import Config, ConfigError, make_config
from pal.datasets import DATASETS, DataError, ImageData, list_datasets, load_dataset
from pal.loop import Experiment, RoundCallback
from pal.loop import run as _run
from pal.models import BACKBONES, list_backbones
from pal.results import ExperimentResult, RoundRecord
from pal.strategies import STRATEGIES, PoolExhaustedError, list_strategies
from pal.training import ProgressFn

__version__ = "0.1.0"


def run_experiment(
    config: Config | Mapping | str | os.PathLike | None = None,
    *,
    data: ImageData | None = None,
    progress: ProgressFn | None = None,
    callbacks: tuple[RoundCallback, ...] = (),
    **overrides,
) -> ExperimentResult:
    """Run a whole active-learning experiment: ``rounds`` queries after the initial pool.

    Args:
        config: a :class:`Config`, a dict of config keys, a YAML path, or nothing (defaults).
        data: an already loaded :class:`ImageData` to use instead of ``config.dataset``.
        progress: per-epoch callback ``(phase, epoch, epochs)``.
        callbacks: called as ``callback(record, experiment)`` after every round.
        **overrides: config keys; they win over ``config``.

    Returns:
        An :class:`ExperimentResult` with ``rounds + 1`` records (round 0 is the initial pool).

    Raises:
        ConfigError: for bad input, naming the field and what is allowed, before any training.
    """
    return _run(make_config(config, **overrides), data, progress, callbacks)


__all__ = [
    "BACKBONES",
    "DATASETS",
    "STRATEGIES",
    "Config",
    "ConfigError",
    "DataError",
    "Experiment",
    "ExperimentResult",
    "ImageData",
    "PoolExhaustedError",
    "RoundRecord",
    "list_backbones",
    "list_datasets",
    "list_strategies",
    "load_dataset",
    "make_config",
    "run_experiment",
]
