"""Sweeps: every experiment a Ray Tune trial, Optuna searching, MLflow recording every round.

The only package of ``pal`` that imports Ray Tune (Ray Data is :mod:`pal.distributed`'s, MLflow
:mod:`pal.tracking`'s). Importing it imports no Ray: its modules import Tune inside the
functions that run a sweep, except :mod:`pal.sweeps.searcher`, which is imported only then.

Its modules (each imports its siblings directly, never this package):

- :mod:`pal.sweeps.launch`: the driver, :func:`sweep` = :func:`prepare` (the job, its configs
  and data, the MLflow store, the sweep's parent run), :func:`build_tuner` and :func:`collect`
  (the best configuration, the variants' table, the parent run closed).
- :mod:`pal.sweeps.trial`: one trial, one whole experiment resumable after any round
  (:func:`trainable`).
- :mod:`pal.sweeps.tuning`: Tune's pieces: the search space (:func:`to_tune_space`), a trial's
  resources, the searcher, ASHA, Optuna's parameter importances.
- :mod:`pal.sweeps.searcher`: Optuna as a searcher that resumes after its driver died at any
  moment (:class:`~pal.sweeps.searcher.ResumableOptunaSearch`).
- :mod:`pal.sweeps.cells`: which (variant, seed) trials of an ablation study run, and whether a
  job still describes the study it grows.

The objective is ``val_auc``: the mean validation accuracy over the rounds so far (the area under
the learning curve, per round). Test accuracy is reported and logged, never optimised.
"""

from __future__ import annotations

from pal.sweeps.cells import check_same_study, study_trials
from pal.sweeps.launch import (
    PreparedSweep,
    SweepResult,
    build_tuner,
    collect,
    prepare,
    summary,
    sweep,
    variant_table,
)
from pal.sweeps.trial import trainable
from pal.sweeps.tuning import to_tune_space

__all__ = [
    "PreparedSweep",
    "SweepResult",
    "build_tuner",
    "check_same_study",
    "collect",
    "prepare",
    "study_trials",
    "summary",
    "sweep",
    "to_tune_space",
    "trainable",
    "variant_table",
]
