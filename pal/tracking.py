"""MLflow tracking: one experiment (one :class:`pal.loop.Experiment`) is one MLflow run.

The only module of ``pal`` that imports MLflow; ``pal.run_experiment`` imports it when tracking is
on. :class:`MLflowTracker` is a round callback that talks to the store through an
:class:`mlflow.MlflowClient` with explicit run ids (no global active run), so it works the same in
the main process, in a thread or in a Ray worker.

Where runs go: an explicit ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file
``mlflow/mlflow.db`` under the working directory with the artifacts beside it in
``mlflow/artifacts``. Point several machines at one ``mlflow server`` (``mlflow/serve.sh``) with
``MLFLOW_TRACKING_URI=http://HOST:5000``; the server then stores the artifacts it is sent.

What a run holds: every config key as a param, ``config.yaml``; per round (``step`` = round)
the accuracies, sizes, timings, class shares and the strategy's query metrics; per round
``rounds/round_<rrr>.json`` (the :class:`pal.results.RoundRecord`, with ``selected``), and
``learning_curve.png`` re-drawn after every round; as tags, the code that made it
(:mod:`pal.provenance`: package version, git commit, dirty or not).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pal.config import Config, ConfigError
from pal.provenance import CODE_VERSION_TAG, code_version, merge_versions
from pal.results import RoundRecord, metric_key

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"  # relative to the working directory
DEFAULT_ARTIFACT_ROOT = "mlflow/artifacts"
SERVER_TIMEOUT_S = 5.0  # how long check_tracking_store waits for an http(s) server to answer

# SQLAlchemy database stores other than SQLite (a ``+driver`` suffix is allowed).
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
_HTTP_SCHEMES = ("http", "https")
_PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow 3 opens an experiment on its GenAI overview unless the experiment says it holds model
# training; every experiment pal creates says so.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Metrics logged for every round; the first two tell which rounds a run already has.
_CURVE_KEYS = ("n_labeled", "val_accuracy", "test_accuracy")


# ---------------------------------------------------------------------- the store
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


# ---------------------------------------------------------------------- the tracker
UNDERFIT_TAG = "pal.underfit_rounds"
"""The run tag listing the rounds whose networks underfit their training set, as
``<round>:<metric>`` words (``3:train_accuracy 4:scoring/rotation_train_accuracy``); absent
when none did."""


class MLflowTracker:
    """A round callback logging one experiment to one MLflow run.

    It uses an :class:`~mlflow.MlflowClient` with explicit run ids and never the global active
    run, so it works inside Ray workers and threads. The run's lifecycle is the context manager:
    ``with tracker:`` creates (or resumes) the run, and ends it ``FINISHED``, ``FAILED`` on an
    error, or ``KILLED`` when the process is interrupted or stopped (``KeyboardInterrupt``,
    ``SystemExit``: Ctrl-C, or Tune stopping a trial early). Inside, pass the tracker among the
    ``callbacks`` of :meth:`pal.loop.Experiment.run` or call it with each round's record.

    Args:
        config: the experiment's config; every key is logged as a param of a new run.
        tracking_uri: the store (see :func:`resolve_tracking_uri`).
        experiment_name: the MLflow experiment the run belongs to (created if needed).
        run_id: resume this run instead of creating one: rounds it already has are not logged
            again, and its learning curve keeps the earlier rounds.
        parent_run_id: nest the new run under this one (a sweep's run, say) in the MLflow UI.
        run_name: the new run's name (default ``<strategy>-seed<seed>``).
        tags: set on the run (on a resumed run too).
    """

    def __init__(
        self,
        config: Config,
        tracking_uri: str | None = None,
        experiment_name: str = "pal",
        run_id: str | None = None,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
    ):
        self.config = config
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.parent_run_id = parent_run_id
        self.run_name = run_name or f"{config.strategy}-seed{config.seed}"
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id: str | None = None
        self._run_id = run_id
        self._started = False
        # round -> (n_labeled, val_accuracy, test_accuracy): what the learning curve shows
        self._curve: dict[int, tuple[float, float, float]] = {}
        self._underfit: list[str] = []  # "<round>:<metric>", the UNDERFIT_TAG's words

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (``None`` until :meth:`start` creates a new run)."""
        return self._run_id

    @property
    def logged_rounds(self) -> list[int]:
        """The rounds this run has, logged now or before a resume."""
        return sorted(self._curve)

    def start(self) -> str:
        """Create the run (params, ``config.yaml``) or resume ``run_id``; return the run id.

        Raises:
            ConfigError: ``run_id: ...`` when the run to resume is not in the store.
        """
        if self._started:
            return self._run_id
        if self._run_id is None:
            self._create_run()
        else:
            self._resume_run()
        self._started = True
        return self._run_id

    def __call__(self, record: RoundRecord, experiment: Any = None) -> None:
        """Log one round: its metrics in one batch (``step`` = round) and its artifacts.

        A round the run already has (from before a resume, or fed twice) is skipped.
        """
        self.start()
        if record.round in self._curve:
            logger.debug("run %s has round %d already; skipped", self._run_id, record.round)
            return
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), timestamp, record.round)
            for key, value in record.metrics().items()
            if math.isfinite(value)  # NaN (no validation set) is left out, not logged
        ]
        tags = []
        if record.underfit:
            self._underfit += [f"{record.round}:{name}" for name in record.underfit]
            tags = [RunTag(UNDERFIT_TAG, " ".join(self._underfit))]
        self.client.log_batch(self._run_id, metrics=metrics, tags=tags)
        self._curve[record.round] = (
            float(record.n_labeled),
            float(record.val_accuracy),
            float(record.test_accuracy),
        )
        with tempfile.TemporaryDirectory(prefix="pal-mlflow-") as tmp:
            rounds = Path(tmp) / "rounds"
            rounds.mkdir()
            (rounds / f"round_{record.round:03d}.json").write_text(
                json.dumps(record.to_dict(), indent=1)
            )
            draw_learning_curve(self._curve, Path(tmp) / "learning_curve.png", self.run_name)
            self.client.log_artifacts(self._run_id, tmp)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self._started:
            self.client.set_terminated(self._run_id, status)
            self._started = False

    def __enter__(self) -> MLflowTracker:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
            return
        status = "KILLED" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "FAILED"
        try:
            self.finish(status)
        except Exception as err:  # keep the experiment's own error, not the store's
            logger.warning("could not end MLflow run %s as %s: %s", self._run_id, status, err)

    # ------------------------------------------------------------------ internals
    def _create_run(self) -> None:
        self.experiment_id = get_or_create_experiment(
            self.client, self.experiment_name, self.tracking_uri
        )
        tags = {**code_version(), **self.tags}
        if self.parent_run_id:
            tags[_PARENT_RUN_TAG] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self._run_id = run.info.run_id
        values = self.config.to_dict()
        params = [Param(key, _param_value(value)) for key, value in values.items()]
        self.client.log_batch(self._run_id, params=params)
        self.client.log_text(self._run_id, yaml.safe_dump(values, sort_keys=False), "config.yaml")

    def _resume_run(self) -> None:
        try:
            run = self.client.get_run(self._run_id)
        except MlflowException as err:
            raise ConfigError(
                f"run_id: no run {self._run_id!r} to resume in {self.tracking_uri!r} ({err})"
            ) from None
        self.experiment_id = run.info.experiment_id
        self.run_name = run.info.run_name or self.run_name
        self.client.update_run(self._run_id, status="RUNNING")
        self._underfit = run.data.tags.get(UNDERFIT_TAG, "").split()
        versions = merge_versions(
            run.data.tags.get(CODE_VERSION_TAG), code_version()[CODE_VERSION_TAG]
        )
        tags = {**self.tags, CODE_VERSION_TAG: versions}
        self.client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        history = {
            key: {m.step: m.value for m in self.client.get_metric_history(self._run_id, key)}
            for key in _CURVE_KEYS
        }
        for step in set(history["val_accuracy"]) | set(history["test_accuracy"]):
            self._curve[step] = tuple(history[key].get(step, math.nan) for key in _CURVE_KEYS)


def draw_learning_curve(
    curve: dict[int, tuple[float, float, float]], path: Path, title: str = ""
) -> None:
    """Plot validation and test accuracy against ``|D_L|`` for the rounds in ``curve``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = sorted(curve)
    x = [curve[r][0] for r in rounds]
    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for column, label in ((1, "validation"), (2, "test")):
        points = [(n, curve[r][column]) for n, r in zip(x, rounds, strict=True)]
        points = [(n, acc) for n, acc in points if math.isfinite(acc) and math.isfinite(n)]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


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


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------- sweeps
def start_sweep_run(tracking_uri: str, experiment_name: str, name: str, job: dict) -> str:
    """Create a sweep's parent run (the job as params and ``job.yaml``); return its id.

    Each trial's run names it as ``mlflow.parentRunId``, so the UI shows the trials nested.
    """
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment_name, tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{name}",
        tags={"pal.kind": "sweep", "pal.sweep": name, **code_version()},
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
    return {metric_key(k): _param_value(v) for k, v in params.items()}


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
        client.log_metric(run_id, "best_val_auc", float(summary["best_val_auc"]))
        client.log_metric(run_id, "trials", float(summary["trials"]))
        client.log_dict(run_id, summary["best_config"], "best_config.json")
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


# ---------------------------------------------------------------------- studies (reports)
SEQUENTIAL_TAG = "pal.sequential"  # a study's group-sequential design, JSON, on its parent run
# Metrics a report reads; per-class shares other than the query's are left in the store.
_REPORT_SKIP_PREFIXES = ("labeled_class_fraction/",)


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
        f"tags.`pal.kind` = 'sweep' and tags.`pal.sweep` = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        return runs[0]
    known = client.search_runs(experiments, "tags.`pal.kind` = 'sweep'", max_results=200)
    names = sorted({r.data.tags.get("pal.sweep", "?") for r in known})
    raise ConfigError(
        f"study: no study {study!r} in {tracking_uri!r}; the store has {names or 'no studies'} "
        "(give a name or a parent run id)"
    )


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
        :data:`UNDERFIT_TAG`'s words; ``variant`` is the ``pal.variant`` tag, else
        the strategy; ``code_version`` the ``pal.code_version`` tag, ``None`` on runs logged
        before pal tagged them).
    """
    client = MlflowClient(tracking_uri)
    parent = find_study_run(tracking_uri, study)
    parent_id = parent.info.run_id
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000
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
                "variant": run.data.tags.get("pal.variant", params.get("strategy", "-")),
                "code_version": run.data.tags.get(CODE_VERSION_TAG),
                "underfit": run.data.tags.get(UNDERFIT_TAG, "").split(),
                "params": params,
                "history": history,
            }
        )
    pairs = parent.data.params.get("pairs")
    sequential = parent.data.tags.get(SEQUENTIAL_TAG)
    return {
        "name": parent.data.tags.get("pal.sweep", parent.info.run_name),
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


def finished_cells(tracking_uri: str, parent_run_id: str) -> set[tuple[str, int]]:
    """The (variant, seed) of every finished run nested under a study's parent run."""
    return {
        (r.data.tags["pal.variant"], int(r.data.params["seed"]))
        for r in _finished_children(tracking_uri, parent_run_id)
        if "pal.variant" in r.data.tags and str(r.data.params.get("seed", "")).isdigit()
    }


def finished_finals(tracking_uri: str, parent_run_id: str) -> list[tuple[str, dict[str, float]]]:
    """Per finished run nested under a study's parent run: its variant and its metrics' last
    values (the final round's)."""
    return [
        (r.data.tags.get("pal.variant", "-"), dict(r.data.metrics))
        for r in _finished_children(tracking_uri, parent_run_id)
    ]


def _finished_children(tracking_uri: str, parent_run_id: str) -> list:
    """The finished MLflow runs nested under ``parent_run_id``."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=50_000,
    )


def study_params(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """The params a study's parent run was logged with (its job: ``base.*``, ``variants``, ...)."""
    return dict(MlflowClient(tracking_uri).get_run(parent_run_id).data.params)


def reopen_run(tracking_uri: str, run_id: str) -> None:
    """Mark a study's parent run running again while trials are added to it."""
    MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")


def log_report(tracking_uri: str, run_id: str, folder: str | os.PathLike) -> None:
    """Attach a report's files to the study's parent run, under ``report/``."""
    MlflowClient(tracking_uri).log_artifacts(run_id, str(folder), "report")


# ---------------------------------------------------------------------- labeling projects
LABEL_EXPERIMENT = "pal-label"


def label_round_metrics(info: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of a labeling round's ``round.json``: sizes, accuracies, the mean
    confidence on the offerable pool, labeled counts and predicted shares per class, and the
    seconds of each phase (``seconds/<phase>``)."""
    out = {
        key: float(info[key])
        for key in (
            "n_labeled",
            "n_offerable",
            "train_accuracy",
            "val_accuracy",
            "test_accuracy",
            "mean_confidence",
            "task_epoch",
            "task_epochs",
            "task_fit_attempts",
        )
        if info.get(key) is not None
    }
    out.update({f"labeled_count/{c}": float(v) for c, v in info["labeled_class_counts"].items()})
    out.update(
        {f"batch_predicted_share/{c}": float(v) for c, v in info["predicted_class_shares"].items()}
    )
    out.update({f"seconds/{k}": float(v) for k, v in info["seconds"].items()})
    queried = info.get("query_metrics", {})
    out.update({f"query/{k}": float(v) for k, v in queried.items() if v is not None})
    return {metric_key(k): v for k, v in out.items() if math.isfinite(v)}


def log_label_round(
    tracking_uri: str,
    run_id: str | None,
    project_name: str,
    info: dict[str, Any],
    files: dict[str, Path],
    tags: dict[str, str] | None = None,
) -> str:
    """Log one labeling round (``step`` = round) to the project's run in the experiment
    :data:`LABEL_EXPERIMENT`, created on the first round (params: the round's config); the
    round's files go under ``rounds/<rrr>/``. Returns the run id.

    A round the run already has (its ``n_labeled`` at that step) is not logged again."""
    client = MlflowClient(tracking_uri)
    if run_id is None:
        experiment_id = get_or_create_experiment(client, LABEL_EXPERIMENT, tracking_uri)
        run = client.create_run(
            experiment_id,
            run_name=project_name,
            tags={"pal.kind": "label", **code_version(), **(tags or {})},
        )
        run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in info["config"].items()]
        client.log_batch(run_id, params=params)
    r = int(info["round"])
    if any(m.step == r for m in client.get_metric_history(run_id, "n_labeled")):
        return run_id
    timestamp = int(time.time() * 1000)
    metrics = [Metric(k, v, timestamp, r) for k, v in label_round_metrics(info).items()]
    client.log_batch(run_id, metrics=metrics)
    for path in files.values():
        client.log_artifact(run_id, str(path), f"rounds/{r:03d}")
    client.set_terminated(run_id, "FINISHED")  # a project's run is done between rounds
    return run_id
