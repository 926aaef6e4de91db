"""A labeling project's MLflow run: one run per project, one step per labeling round.

Part of :mod:`pal.tracking`, the only package of ``pal`` that imports MLflow; ``pal label next``
logs each round's ``round.json`` here when the project tracks to a store.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from pal.provenance import code_version
from pal.results import LabelRound
from pal.tracking.store import get_or_create_experiment, param_value
from pal.vocabulary import KIND_LABEL, KIND_TAG, N_LABELED

LABEL_EXPERIMENT = "pal-label"


def log_label_round(
    tracking_uri: str,
    run_id: str | None,
    project_name: str,
    record: LabelRound,
    files: dict[str, Path],
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> str:
    """Log one labeling round (``step`` = round) to the project's run in the experiment
    :data:`LABEL_EXPERIMENT`, created on the first round with ``params`` (the project's config,
    :meth:`pal.config.Config.to_params`; default: the round's), its metrics
    :meth:`pal.results.LabelRound.metrics`; the round's files go under ``rounds/<rrr>/``.
    Returns the run id.

    A round the run already has (its ``n_labeled`` at that step) is not logged again."""
    client = MlflowClient(tracking_uri)
    if run_id is None:
        experiment_id = get_or_create_experiment(client, LABEL_EXPERIMENT, tracking_uri)
        run = client.create_run(
            experiment_id,
            run_name=project_name,
            tags={KIND_TAG: KIND_LABEL, **code_version(), **(tags or {})},
        )
        run_id = run.info.run_id
        logged = params or {k: param_value(v) for k, v in record.config.items()}
        client.log_batch(run_id, params=[Param(k, v) for k, v in logged.items()])
    r = record.round
    if any(m.step == r for m in client.get_metric_history(run_id, N_LABELED)):
        return run_id
    timestamp = int(time.time() * 1000)
    metrics = [Metric(k, v, timestamp, r) for k, v in record.metrics().items()]
    client.log_batch(run_id, metrics=metrics)
    for path in files.values():
        client.log_artifact(run_id, str(path), f"rounds/{r:03d}")
    client.set_terminated(run_id, "FINISHED")  # a project's run is done between rounds
    return run_id
