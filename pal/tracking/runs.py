"""One experiment (one :class:`pal.loop.Experiment`) as one MLflow run: create or resume it, log
its params and every round's metrics and artifacts, end it.

Part of :mod:`pal.tracking`, the only package of ``pal`` that imports MLflow;
``pal.run_experiment`` imports it when tracking is on. :class:`MLflowTracker` is a round callback
that talks to the store through an :class:`mlflow.MlflowClient` with explicit run ids (no global
active run), so it works the same in the main process, in a thread or in a Ray worker.

What a run holds: every config key as a param, ``config.yaml``; per round (``step`` = round)
the accuracies, sizes, timings, class shares and the strategy's query metrics; per round
``rounds/round_<rrr>.json`` (the :class:`pal.results.RoundRecord`, with ``selected``), and
``learning_curve.png`` re-drawn after every round; as tags, the code that made it
(:mod:`pal.provenance`: package version, git commit, dirty or not) and the rounds that underfit
(:data:`~pal.vocabulary.UNDERFIT_TAG`).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pal.config import Config, ConfigError
from pal.provenance import code_version, merge_versions
from pal.results import RoundRecord
from pal.tracking.store import get_or_create_experiment, resolve_tracking_uri
from pal.vocabulary import (
    CODE_VERSION_TAG,
    N_LABELED,
    PARENT_RUN_TAG,
    TEST_ACCURACY,
    UNDERFIT_TAG,
    VAL_ACCURACY,
)

logger = logging.getLogger(__name__)

# Metrics logged for every round; the first two tell which rounds a run already has.
_CURVE_KEYS = (N_LABELED, VAL_ACCURACY, TEST_ACCURACY)


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
            tags[PARENT_RUN_TAG] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self._run_id = run.info.run_id
        values = self.config.to_dict()
        params = [Param(key, text) for key, text in self.config.to_params().items()]
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
        for step in set(history[VAL_ACCURACY]) | set(history[TEST_ACCURACY]):
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
