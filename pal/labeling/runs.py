"""A labeling project's MLflow run: every round logged once, in order, whoever wrote it.

``pal label next`` and ``pal label serve`` write a round first and log it after, so a command
killed in between leaves a round that says it is not logged (``round.json``'s ``logged``);
:func:`log_pending_rounds` logs those the next time.
"""

from __future__ import annotations

import os


def log_pending_rounds(project, tracking_uri: str | None) -> str | None:
    """Log to MLflow every round whose ``round.json`` says it is not logged yet (a command
    stopped between writing a round and logging it); returns the project's run id. The store is
    ``tracking_uri``, else the one the project logged to before, else ``MLFLOW_TRACKING_URI``,
    else ``PROJECT/mlflow.db``."""
    from pal.labeling.project import write_atomic
    from pal.tracking import check_tracking_store, log_label_round, resolve_tracking_uri
    from pal.vocabulary import PROJECT_TAG

    pending = [r for r in project.rounds() if not project.round_record(r).logged]
    if not pending:
        return project.meta.get("mlflow_run_id")
    uri = resolve_tracking_uri(
        tracking_uri
        or project.meta.get("tracking_uri")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project.folder / 'mlflow.db'}"  # the project holds its own runs
    )
    check_tracking_store(uri)
    run_id = project.meta.get("mlflow_run_id")
    for r in pending:
        folder = project.round_dir(r)
        record = project.round_record(r)
        files = {name: folder / name for name in ("batch.csv", "tasks.json", "round.json")}
        tags = {PROJECT_TAG: str(project.folder)}
        params = project.config.to_params()  # the project's method, as pal label init took it
        run_id = log_label_round(uri, run_id, project.folder.name, record, files, tags, params)
        if project.meta.get("mlflow_run_id") != run_id:
            project.meta.update(mlflow_run_id=run_id, tracking_uri=uri)
            project.save_meta()
        record.logged = True
        write_atomic(folder / "round.json", record.to_json())
    return run_id
