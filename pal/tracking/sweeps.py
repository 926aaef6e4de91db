"""A sweep's (or an ablation study's) parent MLflow run: open it, reopen it, read its trials
back, find it by name, log its outcome and close it.

Part of :mod:`pal.tracking`, the only package of ``pal`` that imports MLflow. A trial's own run
is an ordinary experiment run (:class:`pal.tracking.runs.MLflowTracker`) nested under the parent
run by its :data:`~pal.vocabulary.PARENT_RUN_TAG`.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from pal.config import ConfigError
from pal.provenance import code_version
from pal.results import metric_key
from pal.tracking.store import get_or_create_experiment, param_value
from pal.vocabulary import (
    BEST_VAL_AUC,
    KIND_SWEEP,
    KIND_TAG,
    PARENT_RUN_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIALS,
    VARIANT_TAG,
)

BEST_CONFIG_FILE = "best_config.json"  # a finished sweep's best configuration, on its parent run


def start_sweep_run(tracking_uri: str, experiment_name: str, name: str, job: dict) -> str:
    """Create a sweep's parent run (the job as params and ``job.yaml``); return its id.

    Each trial's run names it as ``mlflow.parentRunId``, so the UI shows the trials nested.
    """
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment_name, tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{name}",
        tags={KIND_TAG: KIND_SWEEP, SWEEP_TAG: name, **code_version()},
    )
    params = sweep_params(job)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    client.log_text(run.info.run_id, yaml.safe_dump(job, sort_keys=False), "job.yaml")
    return run.info.run_id


def sweep_params(job: dict) -> dict[str, str]:
    """The params a sweep's parent run logs for ``job`` (a :class:`pal.jobs.SweepJob` as a
    dict): ``base.<key>``, ``search.<key>`` and the job's other keys, as MLflow keeps them."""
    params = {f"base.{k}": v for k, v in job.get("base", {}).items()}
    params.update({f"search.{k}": v for k, v in job.get("search_space", {}).items()})
    params.update({k: v for k, v in job.items() if k not in ("base", "search_space", "smoke")})
    return {metric_key(k): param_value(v) for k, v in params.items()}


def finish_sweep_run(
    tracking_uri: str,
    run_id: str,
    summary: dict[str, Any] | None,
    importances: dict[str, float] | None,
    status: str = "FINISHED",
) -> None:
    """Log a sweep's outcome on its parent run and end it.

    ``summary`` holds ``best_config``, ``best_val_auc`` and ``trials``; ``importances`` (Optuna's
    parameter importances for the objective) is drawn as ``param_importances.png``.
    """
    client = MlflowClient(tracking_uri)
    if summary:
        client.log_metric(run_id, BEST_VAL_AUC, float(summary[BEST_VAL_AUC]))
        client.log_metric(run_id, TRIALS, float(summary[TRIALS]))
        client.log_dict(run_id, summary["best_config"], BEST_CONFIG_FILE)
        if summary.get("variants"):
            client.log_dict(run_id, summary["variants"], "variants.json")
    if importances:
        client.log_dict(run_id, importances, "param_importances.json")
        with tempfile.TemporaryDirectory(prefix="pal-mlflow-") as tmp:
            path = Path(tmp) / "param_importances.png"
            draw_importances(importances, path)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)


def draw_importances(importances: dict[str, float], path: Path) -> None:
    """A horizontal bar chart of parameter importances (fANOVA or Optuna's default)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = sorted(importances, key=importances.get)
    fig = Figure(figsize=(6, 0.5 * len(names) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for val_auc (mean validation accuracy over rounds)")
    ax.set_title("Optuna parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def find_study_run(tracking_uri: str, study: str):
    """The parent run of a sweep or ablation study: ``study`` is its run id or its name.

    By name, the newest run tagged ``pal.kind=sweep`` and ``pal.sweep=<name>`` in any experiment.

    Raises:
        ConfigError: ``study: ...`` naming the studies the store has when none matches.
    """
    client = MlflowClient(tracking_uri)
    if re.fullmatch(r"[0-9a-f]{32}", study):
        try:
            return client.get_run(study)
        except MlflowException:
            pass
    experiments = [e.experiment_id for e in client.search_experiments()]
    name = study.replace("'", "")
    runs = client.search_runs(
        experiments,
        f"tags.`{KIND_TAG}` = '{KIND_SWEEP}' and tags.`{SWEEP_TAG}` = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        return runs[0]
    known = client.search_runs(experiments, f"tags.`{KIND_TAG}` = '{KIND_SWEEP}'", max_results=200)
    names = sorted({r.data.tags.get(SWEEP_TAG, "?") for r in known})
    raise ConfigError(
        f"study: no study {study!r} in {tracking_uri!r}; the store has {names or 'no studies'} "
        "(give a name or a parent run id)"
    )


def sweep_best_config(
    tracking_uri: str, sweep: str, field: str = "from_sweep"
) -> tuple[str, dict[str, Any]]:
    """The parent run id of sweep ``sweep`` (its name or run id, as :func:`find_study_run`
    takes it) and the best configuration it logged when it finished (``best_config.json``).

    Raises:
        ConfigError: ``study: ...`` when the store has no such sweep; ``<field>: ...`` when the
            sweep has no best configuration (it has not finished).
    """
    run_id = find_study_run(tracking_uri, sweep).info.run_id
    with tempfile.TemporaryDirectory(prefix="pal-mlflow-") as tmp:
        try:
            path = MlflowClient(tracking_uri).download_artifacts(run_id, BEST_CONFIG_FILE, tmp)
        except Exception as err:  # what a store raises for a missing artifact varies
            raise ConfigError(
                f"{field}: the sweep {sweep!r} (run {run_id}) has no {BEST_CONFIG_FILE}; it has "
                f"not finished ({err})"
            ) from None
        return run_id, json.loads(Path(path).read_text())


def finished_cells(tracking_uri: str, parent_run_id: str) -> set[tuple[str, int]]:
    """The (variant, seed) of every finished run nested under a study's parent run."""
    return {
        (r.data.tags[VARIANT_TAG], int(r.data.params["seed"]))
        for r in _finished_children(tracking_uri, parent_run_id)
        if VARIANT_TAG in r.data.tags and str(r.data.params.get("seed", "")).isdigit()
    }


def finished_finals(tracking_uri: str, parent_run_id: str) -> list[tuple[str, dict[str, float]]]:
    """Per finished run nested under a study's parent run: its variant and its metrics' last
    values (the final round's)."""
    return [
        (r.data.tags.get(VARIANT_TAG, "-"), dict(r.data.metrics))
        for r in _finished_children(tracking_uri, parent_run_id)
    ]


def _finished_children(tracking_uri: str, parent_run_id: str) -> list:
    """The finished MLflow runs nested under ``parent_run_id``."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.{PARENT_RUN_TAG} = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=50_000,
    )


def study_params(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """The params a study's parent run was logged with (its job: ``base.*``, ``variants``, ...)."""
    return dict(MlflowClient(tracking_uri).get_run(parent_run_id).data.params)


def reopen_run(tracking_uri: str, run_id: str) -> None:
    """Mark a study's parent run running again while trials are added to it."""
    MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")


def retire_unfinished_trial_runs(tracking_uri: str, parent_run_id: str, trial_id: str) -> list[str]:
    """Move to MLflow's trash the unfinished runs of trial ``trial_id`` under ``parent_run_id``:
    what a trial stopped before its first checkpoint left behind, before Tune starts it afresh
    (from round 0, with the same seed) under a new run. Deleted runs stay in the store
    (``mlflow runs restore`` brings one back; ``mlflow gc`` alone removes them). Returns their
    ids."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.{PARENT_RUN_TAG} = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}' "
        "and attributes.status != 'FINISHED'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in runs]
