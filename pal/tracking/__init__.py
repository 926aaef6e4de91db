"""MLflow tracking: one experiment (one :class:`pal.loop.Experiment`) is one MLflow run.

The only package of ``pal`` that imports MLflow; ``pal.run_experiment`` imports it when tracking
is on, ``pal sweep``/``pal report``/``pal label`` when they talk to the store. Every function
takes the store's URI and uses an :class:`mlflow.MlflowClient` with explicit run ids (no global
active run), so it works the same in the main process, in a thread or in a Ray worker.

Its modules, along the store's seams (each imports its siblings directly, never this package):

- :mod:`pal.tracking.store`: where runs go (:func:`resolve_tracking_uri`), whether the store
  answers (:func:`check_tracking_store`), the experiments runs are filed under, links and the
  command that shows the runs, a run's params (:func:`run_params`).
- :mod:`pal.tracking.runs`: an experiment's run, created or resumed, its params and every
  round's metrics and artifacts (:class:`MLflowTracker`).
- :mod:`pal.tracking.sweeps`: a sweep's or an ablation study's parent run (opened, reopened,
  found by name, closed with its outcome) and its finished trials read back.
- :mod:`pal.tracking.studies`: a study's runs as plain data for a report, its group-sequential
  design, the report's files.
- :mod:`pal.tracking.labeling`: a labeling project's run, one step per labeling round.

The tag names and shared metric names are :mod:`pal.vocabulary`'s, which imports no MLflow.
"""

from __future__ import annotations

from pal.tracking.labeling import LABEL_EXPERIMENT, log_label_round
from pal.tracking.runs import MLflowTracker, draw_learning_curve
from pal.tracking.store import (
    DEFAULT_ARTIFACT_ROOT,
    DEFAULT_TRACKING_URI,
    SERVER_TIMEOUT_S,
    artifact_root,
    check_tracking_store,
    get_or_create_experiment,
    param_value,
    resolve_tracking_uri,
    run_params,
    run_url,
    ui_command,
)
from pal.tracking.studies import (
    load_study,
    load_study_design,
    log_report,
    set_sequential_design,
)
from pal.tracking.sweeps import (
    BEST_CONFIG_FILE,
    draw_importances,
    find_study_run,
    finish_sweep_run,
    finished_cells,
    finished_finals,
    reopen_run,
    retire_unfinished_trial_runs,
    start_sweep_run,
    study_params,
    sweep_best_config,
    sweep_params,
)
from pal.vocabulary import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, SEQUENTIAL_TAG, UNDERFIT_TAG

__all__ = [
    "BEST_CONFIG_FILE",
    "DEFAULT_ARTIFACT_ROOT",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "LABEL_EXPERIMENT",
    "SEQUENTIAL_TAG",
    "SERVER_TIMEOUT_S",
    "UNDERFIT_TAG",
    "MLflowTracker",
    "artifact_root",
    "check_tracking_store",
    "draw_importances",
    "draw_learning_curve",
    "find_study_run",
    "finish_sweep_run",
    "finished_cells",
    "finished_finals",
    "get_or_create_experiment",
    "load_study",
    "load_study_design",
    "log_label_round",
    "log_report",
    "param_value",
    "reopen_run",
    "retire_unfinished_trial_runs",
    "resolve_tracking_uri",
    "run_params",
    "run_url",
    "set_sequential_design",
    "start_sweep_run",
    "study_params",
    "sweep_best_config",
    "sweep_params",
    "ui_command",
]
