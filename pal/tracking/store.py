"""The MLflow store: where runs go, whether it answers, and the experiments runs are filed under.

Part of :mod:`pal.tracking`, the only package of ``pal`` that imports MLflow.

Where runs go: an explicit ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file
``mlflow/mlflow.db`` under the working directory with the artifacts beside it in
``mlflow/artifacts``. Point several machines at one ``mlflow server`` (``mlflow/serve.sh``) with
``MLFLOW_TRACKING_URI=http://HOST:5000``; the server then stores the artifacts it is sent.
"""

from __future__ import annotations

import logging
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pal.config import ConfigError, param_value  # noqa: F401  (re-exported)
from pal.vocabulary import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"  # relative to the working directory
DEFAULT_ARTIFACT_ROOT = "mlflow/artifacts"
SERVER_TIMEOUT_S = 5.0  # how long check_tracking_store waits for an http(s) server to answer

# SQLAlchemy database stores other than SQLite (a ``+driver`` suffix is allowed).
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
_HTTP_SCHEMES = ("http", "https")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to use: ``uri``, else ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`.

    A SQLite file path is made absolute (against the working directory) and its folder is
    created, so the URI means the same file in a Ray worker that runs in another directory.

    Raises:
        ConfigError: ``tracking_uri: ...`` when the SQLite file's folder cannot be created.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    path = _sqlite_path(uri)
    if path is None:
        return uri
    path = path.expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"tracking_uri: cannot create the folder of the SQLite store {uri!r}: {err}"
        ) from None
    return "sqlite:///" + path.as_posix() + _uri_query(uri)


def check_tracking_store(uri: str) -> None:
    """Make sure MLflow can read and write ``uri`` before an experiment spends time training.

    An http(s) server must answer the tracking REST API within :data:`SERVER_TIMEOUT_S` seconds
    (MLflow's own client would retry for minutes); a SQLite file must be creatable; a folder
    store (``./mlruns``, ``file:``) is refused, as MLflow 3 no longer writes to one.

    Raises:
        ConfigError: ``tracking_uri: ...`` saying what is wrong and what would work.
    """
    scheme = urlparse(uri).scheme.lower().split("+")[0]
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:2] == ":"):  # a path, or C:\...
        raise ConfigError(
            f"tracking_uri: {uri!r} is a folder store, which MLflow 3 no longer writes to; use "
            f"a SQLite file ({DEFAULT_TRACKING_URI}) or a server (http://HOST:5000)"
        )
    if scheme not in ("sqlite", "databricks", *_DB_SCHEMES, *_HTTP_SCHEMES):
        raise ConfigError(
            f"tracking_uri: unknown scheme {scheme!r} in {uri!r}; use sqlite:///PATH.db, "
            "http(s)://HOST:PORT of an mlflow server, or a postgresql/mysql/mssql database URI"
        )
    if scheme == "sqlite":
        uri = resolve_tracking_uri(uri)
    elif scheme in _HTTP_SCHEMES:
        _probe_server(uri)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # what a store raises varies: MlflowException, OSError, SQLAlchemy
        raise ConfigError(f"tracking_uri: cannot use the MLflow store {uri!r}: {err}") from None


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of the MLflow experiment ``name``, created if needed and tagged
    ``mlflow.experimentKind = custom_model_development`` (so the UI opens on its training runs,
    not on MLflow 3's GenAI overview; an existing experiment without the tag gets it).

    A new experiment on a SQLite store keeps its artifacts in ``artifacts/`` beside the database
    file (``mlflow/artifacts`` for the default store), on another database store in
    :data:`DEFAULT_ARTIFACT_ROOT` under the working directory; on a server, wherever the server
    puts them (it proxies the uploads).

    Raises:
        ConfigError: ``experiment_name: ...`` when ``name`` is empty or a deleted experiment.
    """
    if not name:
        raise ConfigError("experiment_name: must be a non-empty string")
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_root(tracking_uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException:  # another worker created it in the meantime
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if urlparse(tracking_uri).scheme.lower() in _HTTP_SCHEMES and (
        found.artifact_location or ""
    ).startswith("file:"):
        logger.warning(
            "MLflow experiment %r keeps its artifacts at %s (it was created without the server): "
            "a run on another machine writes them to that path on its own disk; use another "
            "experiment_name for runs logged through %s",
            name,
            found.artifact_location,
            tracking_uri,
        )
    if found.lifecycle_stage == "deleted":
        raise ConfigError(
            f"experiment_name: {name!r} is a deleted experiment in {tracking_uri!r}; restore "
            f"it (mlflow experiments restore --experiment-id {found.experiment_id}) or use "
            "another name"
        )
    if EXPERIMENT_KIND_TAG not in found.tags:  # made before pal tagged its experiments
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id


def artifact_root(tracking_uri: str) -> str | None:
    """The artifact location for new experiments on ``tracking_uri`` (``None``: the store's)."""
    scheme = urlparse(tracking_uri).scheme.lower().split("+")[0]
    path = _sqlite_path(tracking_uri)
    if path is not None:
        root = path.expanduser().resolve().parent / Path(DEFAULT_ARTIFACT_ROOT).name
    elif scheme == "sqlite" or scheme in _DB_SCHEMES:
        root = Path(DEFAULT_ARTIFACT_ROOT).resolve()
    else:
        return None
    return root.as_uri()


def run_url(tracking_uri: str, run_id: str, experiment_id: str | None = None) -> str | None:
    """The run's page on an http(s) server, or ``None`` for other stores (or when unreachable)."""
    if urlparse(tracking_uri).scheme.lower() not in _HTTP_SCHEMES:
        return None
    if experiment_id is None:
        try:
            experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
        except Exception:  # a link is a convenience; never fail a run for it
            return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_command(tracking_uri: str) -> str:
    """A shell command that shows the runs of ``tracking_uri`` in a browser.

    For a SQLite file it also names the ``artifacts`` folder beside it, where ``mlflow/serve.sh``
    keeps the artifacts it was sent, so runs logged through a server show theirs as well.
    """
    if urlparse(tracking_uri).scheme.lower() in _HTTP_SCHEMES:
        return f"python -m webbrowser {tracking_uri}"
    command = f"mlflow ui --backend-store-uri {tracking_uri}"
    path = _sqlite_path(tracking_uri)
    if path is not None:
        command += f" --artifacts-destination {path.parent / Path(DEFAULT_ARTIFACT_ROOT).name}"
    return command


def run_params(tracking_uri: str, run_id: str, field: str = "run_id") -> dict[str, str]:
    """The params of the MLflow run ``run_id``, as the store keeps them (strings).

    Raises:
        ConfigError: ``<field>: no run ...`` when the store has no run ``run_id``.
    """
    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise ConfigError(f"{field}: no run {run_id!r} in {tracking_uri!r} ({err})") from None
    return dict(run.data.params)


# ---------------------------------------------------------------------- helpers
def _sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, or ``None`` (not SQLite, or in memory)."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _uri_query(uri: str) -> str:
    return "?" + uri.split("?", 1)[1] if "?" in uri else ""


def _probe_server(uri: str) -> None:
    """Ask the server's REST API for one experiment, waiting :data:`SERVER_TIMEOUT_S` at most."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    context = None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, timeout=SERVER_TIMEOUT_S, context=context):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # the server answers; MlflowClient brings the credentials
            return
        raise ConfigError(
            f"tracking_uri: {uri!r} answers but not as an MLflow tracking server "
            f"(HTTP {err.code} for {url})"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            f"tracking_uri: no MLflow server answers at {uri!r} within {SERVER_TIMEOUT_S:g} s "
            f"({reason}); start one (mlflow/serve.sh) or use a SQLite file ({DEFAULT_TRACKING_URI})"
        ) from None
