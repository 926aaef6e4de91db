"""A study's runs read back for its report and its growth: the nested runs' params, tags and
metric histories, the group-sequential design on its parent run, and the report's files.

Part of :mod:`pal.tracking`, the only package of ``pal`` that imports MLflow; :mod:`pal.reports`
and :mod:`pal.studies` read the store through these functions.
"""

from __future__ import annotations

import ast
import json
import os
from typing import Any

from mlflow import MlflowClient

from pal.tracking.sweeps import find_study_run
from pal.vocabulary import (
    CODE_VERSION_TAG,
    LABELED_CLASS_FRACTION,
    PARENT_RUN_TAG,
    SEQUENTIAL_TAG,
    SWEEP_TAG,
    UNDERFIT_TAG,
    VARIANT_TAG,
)

# Metrics a report reads; per-class shares other than the query's are left in the store.
_REPORT_SKIP_PREFIXES = (LABELED_CLASS_FRACTION,)


def load_study(tracking_uri: str, study: str) -> dict[str, Any]:
    """A study's runs as plain data, for :mod:`pal.reports`.

    Returns:
        ``{"name", "parent_run_id", "experiment_id", "pairs", "correction", "sequential",
        "runs": [...]}`` (``pairs``: the study's variant -> reference map, ``{}`` if none;
        ``correction``: the job's family-wise correction, ``None`` if it set none;
        ``sequential``: the group-sequential design of a study grown until decided, else
        ``None``), one entry per nested run:
        ``{"run_id", "run_name", "status", "variant", "code_version", "underfit",
        "params": {key: str}, "history": {metric: {round: value}}}`` (``underfit``: the
        :data:`~pal.vocabulary.UNDERFIT_TAG`'s words; ``variant`` is the ``pal.variant`` tag, else
        the strategy; ``code_version`` the ``pal.code_version`` tag, ``None`` on runs logged
        before pal tagged them).
    """
    client = MlflowClient(tracking_uri)
    parent = find_study_run(tracking_uri, study)
    parent_id = parent.info.run_id
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.{PARENT_RUN_TAG} = '{parent_id}'", max_results=5000
    )
    runs = []
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        keys = [k for k in run.data.metrics if not k.startswith(_REPORT_SKIP_PREFIXES)]
        history = {
            key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            for key in keys
        }
        params = dict(run.data.params)
        runs.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.info.status,
                "variant": run.data.tags.get(VARIANT_TAG, params.get("strategy", "-")),
                "code_version": run.data.tags.get(CODE_VERSION_TAG),
                "underfit": run.data.tags.get(UNDERFIT_TAG, "").split(),
                "params": params,
                "history": history,
            }
        )
    pairs = parent.data.params.get("pairs")
    sequential = parent.data.tags.get(SEQUENTIAL_TAG)
    return {
        "name": parent.data.tags.get(SWEEP_TAG, parent.info.run_name),
        "parent_run_id": parent_id,
        "experiment_id": parent.info.experiment_id,
        "pairs": ast.literal_eval(pairs) if pairs else {},  # a JSON or Python dict literal
        "correction": parent.data.params.get("correction"),
        "sequential": json.loads(sequential) if sequential else None,
        "runs": runs,
    }


def load_study_design(tracking_uri: str, parent_run_id: str) -> dict | None:
    """The group-sequential design recorded on a study's parent run, ``None`` without one."""
    tag = MlflowClient(tracking_uri).get_run(parent_run_id).data.tags.get(SEQUENTIAL_TAG)
    return json.loads(tag) if tag else None


def set_sequential_design(tracking_uri: str, parent_run_id: str, design: dict) -> None:
    """Record a study's group-sequential design (:class:`pal.stats.SequentialDesign`'s
    ``to_dict()``) on its parent run, where ``pal report`` reads it."""
    MlflowClient(tracking_uri).set_tag(parent_run_id, SEQUENTIAL_TAG, json.dumps(design))


def log_report(tracking_uri: str, run_id: str, folder: str | os.PathLike) -> None:
    """Attach a report's files to the study's parent run, under ``report/``."""
    MlflowClient(tracking_uri).log_artifacts(run_id, str(folder), "report")
