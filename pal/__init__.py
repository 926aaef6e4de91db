"""pal: Pretext-based Active Learning, and the baselines and settings it is compared in.

>>> import pal
>>> result = pal.run_experiment(dataset="digits", strategy="pal", rounds=3, seed=0)
>>> [(r.round, r.n_labeled, r.test_accuracy) for r in result.rounds]  # doctest: +SKIP

The extension seams are here: a query strategy (:class:`Strategy`, :func:`register_strategy`),
a pretext task (:class:`Pretext`, :func:`register_pretext`) and a dataset path form
(:func:`register_prefix`); so are the warnings and errors a caller catches. Importing ``pal``
imports neither torch (those names load on first use), MLflow (:mod:`pal.tracking`) nor Ray
(:mod:`pal.sweeps`, :mod:`pal.distributed`): :func:`run_experiment`, :func:`sweep` and
:func:`report` import them when they are called.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pal.config import Config, ConfigError, make_config
from pal.provenance import PACKAGE_VERSION as __version__

if TYPE_CHECKING:  # the names below are imported on first use (see _LAZY)
    from pal.data import ImageData
    from pal.loop import Experiment, RoundCallback
    from pal.results import ExperimentResult
    from pal.training import ProgressFn

_LAZY = {
    "pal.data": (
        "DATASETS",
        "DataError",
        "ImageData",
        "UnknownDatasetError",
        "list_datasets",
        "load_dataset",
        "register_prefix",
    ),
    "pal.labeling.imports": ("AnnotationFileError",),
    "pal.labeling.project": ("ProjectBusyError", "ProjectError"),
    "pal.loop": ("Experiment", "RoundCallback"),
    "pal.models": ("BACKBONES", "list_backbones"),
    "pal.pretext": ("Pretext", "register_pretext"),
    "pal.registry": ("UnknownNameError",),
    "pal.results": ("ExperimentResult", "RoundRecord"),
    "pal.strategies": (
        "STRATEGIES",
        "PoolExhaustedError",
        "Strategy",
        "list_strategies",
        "register_strategy",
    ),
    "pal.strategies.pal": ("DominanceWarning",),
    "pal.training": ("ProgressFn", "TrainingDivergedError", "UnderfitWarning"),
}
"""Module -> the names ``pal`` exports from it, imported when first asked for: ``import pal``
(and ``pal --help``) loads no torch."""
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'pal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def run_experiment(
    config: Config | Mapping | str | os.PathLike | None = None,
    *,
    data: ImageData | None = None,
    progress: ProgressFn | None = None,
    callbacks: tuple[RoundCallback, ...] = (),
    tracking: bool = True,
    tracking_uri: str | None = None,
    experiment_name: str = "pal",
    **overrides,
) -> ExperimentResult:
    """Run a whole active-learning experiment: ``rounds`` queries after the initial pool.

    Args:
        config: a :class:`Config`, a dict of config keys, a YAML path, or nothing (defaults).
        data: an already loaded :class:`ImageData` to use instead of ``config.dataset``.
        progress: per-epoch callback ``(phase, epoch, epochs)``.
        callbacks: called as ``callback(record, experiment)`` after every round.
        tracking: log the experiment as one MLflow run (params, per-round metrics, artifacts).
        tracking_uri: the MLflow store; default ``MLFLOW_TRACKING_URI``, else the SQLite file
            ``mlflow/mlflow.db`` under the working directory.
        experiment_name: the MLflow experiment the run is filed under.
        **overrides: config keys; they win over ``config``.

    Returns:
        An :class:`ExperimentResult` with ``rounds + 1`` records (round 0 is the initial pool)
        and, when tracking, the MLflow ``run_id``.

    Raises:
        ConfigError: for bad input, naming the field and what is allowed, before any training
            (an unusable ``tracking_uri`` included).
    """
    from pal.loop import Experiment

    experiment = Experiment(make_config(config, **overrides), data, progress)
    if not tracking:
        return experiment.run(callbacks)
    return run_tracked(experiment, callbacks, tracking_uri, experiment_name)


def run_tracked(
    experiment: Experiment,
    callbacks: tuple[RoundCallback, ...] = (),
    tracking_uri: str | None = None,
    experiment_name: str = "pal",
) -> ExperimentResult:
    """Run ``experiment``'s remaining rounds as one MLflow run (see :func:`run_experiment`).

    Raises:
        ConfigError: an unusable ``tracking_uri``, before any training.
    """
    from pal.tracking.runs import MLflowTracker
    from pal.tracking.store import check_tracking_store, resolve_tracking_uri
    from pal.vocabulary import PLACEMENT_TAG

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_store(uri)
    tags = {PLACEMENT_TAG: experiment.placement.describe()}
    with MLflowTracker(experiment.config, uri, experiment_name, tags=tags) as tracker:
        result = experiment.run((tracker, *callbacks))  # logged before the caller's callbacks
    result.run_id = tracker.run_id
    return result


def sweep(job: str | os.PathLike, **options):
    """Run the Ray Tune sweep described by a job file; see :func:`pal.sweeps.sweep`.

    >>> pal.sweep("tune_jobs/quickstart.py", num_samples=8)  # doctest: +SKIP
    """
    from pal.sweeps.launch import sweep as run_sweep  # Ray is imported only when a sweep runs

    return run_sweep(job, **options)


def until_decided(job: str | os.PathLike, **options):
    """Grow an ablation study until its verdicts are decided; see :func:`pal.studies.until_decided`.

    >>> pal.until_decided("ablations/mnist_strategies.py", max_seeds=10)  # doctest: +SKIP
    """
    from pal.studies import until_decided as grow

    return grow(job, **options)


def report(study: str | os.PathLike, **options):
    """Figures and tables of a sweep or ablation study from MLflow; see :func:`pal.reports.report`.

    >>> pal.report("components")  # doctest: +SKIP
    """
    from pal.reports import report as make_report  # matplotlib and MLflow only when asked

    return make_report(study, **options)


__all__ = [
    "BACKBONES",
    "DATASETS",
    "STRATEGIES",
    "AnnotationFileError",
    "Config",
    "ConfigError",
    "DataError",
    "DominanceWarning",
    "Experiment",
    "ExperimentResult",
    "ImageData",
    "PoolExhaustedError",
    "Pretext",
    "ProjectBusyError",
    "ProjectError",
    "RoundCallback",
    "RoundRecord",
    "Strategy",
    "TrainingDivergedError",
    "UnderfitWarning",
    "UnknownDatasetError",
    "UnknownNameError",
    "__version__",
    "list_backbones",
    "list_datasets",
    "list_strategies",
    "load_dataset",
    "make_config",
    "register_prefix",
    "register_pretext",
    "register_strategy",
    "report",
    "run_experiment",
    "run_tracked",
    "sweep",
    "until_decided",
]
