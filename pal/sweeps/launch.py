"""A sweep's driver: check the job, open its MLflow run, run its trials in Ray Tune, collect.

Part of :mod:`pal.sweeps`, the only package of ``pal`` that imports Ray Tune (here inside the
functions, when a sweep runs). A sweep is described by a *job file* (:mod:`pal.jobs`: plain data,
no Ray). :func:`sweep` runs one in three steps: :func:`prepare` (check the job, its configs and
data, the MLflow store; open or reopen the sweep's MLflow run), :func:`build_tuner` (Tune's
search space, searcher, scheduler, resources and storage: :mod:`pal.sweeps.tuning`) and
:func:`collect` (the best configuration, the variants' table, the sweep's run closed). Each trial
is :func:`pal.sweeps.trial.trainable`.

Where trials run: on the Ray cluster at ``address`` (or ``RAY_ADDRESS``, which ``ray job submit``
sets) when there is one, where every trial asks for ``gpus_per_trial`` GPUs as the job says, and
the autoscaler starts GPU workers for them; otherwise on a local Ray started here, where a job's
GPUs are asked for only if this machine has some. ``storage_path`` (trial checkpoints, Tune's
state) is ``--storage-path``, else ``PAL_STORAGE_PATH``, else the job's: on a cluster it must be
storage every node reaches (``s3://...``, or a shared file system).

The objective is ``val_auc``: the mean validation accuracy over the rounds so far (the area under
the learning curve, per round). Test accuracy is reported and logged, never optimised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from pal.config import ConfigError, make_config
from pal.jobs import OBJECTIVE, SweepJob, absolute_paths, load_job, validate_job
from pal.sweeps.cells import check_same_study, study_trials
from pal.sweeps.trial import trainable
from pal.sweeps.tuning import (
    asha_scheduler,
    connected_to_cluster,
    optuna_storage,
    param_importances,
    searcher_for,
    searcher_used,
    to_tune_space,
    trial_resources,
)
from pal.vocabulary import BEST_VAL_AUC, TEST_ACCURACY, TRIALS


@dataclasses.dataclass
class SweepResult:
    """What a finished sweep gives back (``result_grid`` is Ray Tune's ``ResultGrid``)."""

    job: SweepJob
    best_config: dict[str, Any]
    best_val_auc: float
    parent_run_id: str
    tracking_uri: str
    run_dir: str
    n_trials: int
    n_errored: int
    variants: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    result_grid: Any = None


def variant_table(finals: list[tuple[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per variant (ablations), from ``(variant, final metrics)`` per finished run: runs, and
    mean and sample std over them of ``val_auc`` and the last round's test accuracy."""
    import numpy as np

    groups: dict[str, list] = {}
    for variant, metrics in finals:
        groups.setdefault(variant, []).append(metrics)
    table = {}
    for name, metrics in groups.items():
        auc = np.array([m.get(OBJECTIVE, np.nan) for m in metrics], dtype=float)
        test = np.array([m.get(TEST_ACCURACY, np.nan) for m in metrics], dtype=float)
        ddof = 1 if len(metrics) > 1 else 0
        table[name] = {
            "trials": len(metrics),
            "val_auc_mean": float(auc.mean()),
            "val_auc_std": float(auc.std(ddof=ddof)),
            "final_test_accuracy_mean": float(test.mean()),
            "final_test_accuracy_std": float(test.std(ddof=ddof)),
        }
    return table


def sweep(
    job_path: str | os.PathLike,
    *,
    smoke: bool = False,
    resume: bool = False,
    num_samples: int | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    storage_path: str | None = None,
    seeds: int | None = None,
    variants: list[str] | None = None,
    verbose: int = 1,
    _fault: dict | None = None,
    _cells: list[tuple[str, int]] | None = None,
) -> SweepResult:
    """Run (or with ``resume=True`` continue) the sweep described by a job file.

    For an ablation study, ``seeds`` (a count) and ``variants`` (a subset of the job's) choose
    its trials; when the job already has a study (its ``<name>.latest.json`` pointer), either
    one grows that study: only the (variant, seed) trials it has not finished run, into the same
    MLflow parent run. Trials start seed-major (:func:`pal.jobs.study_cells`).

    Everything that can be checked is checked before a trial starts: the job, every config the
    search space can produce at its bounds, the dataset, and the MLflow store.
    """
    import ray

    from pal.tracking.store import ui_command

    prepared = prepare(
        job_path,
        smoke=smoke,
        resume=resume,
        num_samples=num_samples,
        tracking_uri=tracking_uri,
        storage_path=storage_path,
        seeds=seeds,
        variants=variants,
        cells=_cells,
    )
    if prepared.cells == []:
        if verbose:
            print(
                f"study {prepared.job.name}: every (variant, seed) asked for has a finished run "
                f"under parent run {prepared.previous['parent_run_id']}; nothing to run"
            )
        return SweepResult(
            job=prepared.job,
            best_config={},
            best_val_auc=float("nan"),
            parent_run_id=prepared.previous["parent_run_id"],
            tracking_uri=prepared.tracking_uri,
            run_dir="",
            n_trials=0,
            n_errored=0,
        )
    address = address or os.environ.get("RAY_ADDRESS")
    on_cluster = bool(address) or connected_to_cluster()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose > 1)
    # a resource the trials could never get is refused before the sweep's run is created
    resources = trial_resources(prepared.job, on_cluster, ray.cluster_resources())
    prepared.open_run()
    tuner = build_tuner(prepared, resources, verbose, _fault)
    result = collect(prepared, tuner.fit())
    if verbose:
        print(summary(result, ui_command(prepared.tracking_uri), job_path))
    return result


@dataclasses.dataclass
class PreparedSweep:
    """A checked job and where it runs: its configs' paths made absolute, the MLflow store,
    the Tune storage, and (after :meth:`open_run`) the sweep's MLflow run.

    Attributes:
        previous: the pointer of the job's last sweep when resuming or growing its study
            (``parent_run_id``, ``run_name``), else ``None``.
        cells: an ablation study's (variant, seed) trials to run, seed-major (``None`` for a
            sweep); growing a study, only those it has not finished.
        grow: whether the trials go into the job's existing study (``previous``).
    """

    job: SweepJob
    base: dict[str, Any]
    tracking_uri: str
    storage: str
    pointer: str
    previous: dict[str, str] | None
    cells: list[tuple[str, int]] | None = None
    grow: bool = False
    parent_run_id: str = ""
    run_name: str = ""

    @property
    def run_dir(self) -> str:
        """Tune's folder for this sweep (its state and the trials' checkpoints)."""
        return f"{self.storage.rstrip('/')}/{self.run_name}"

    @property
    def study_storage(self) -> str | None:
        """The Optuna study's storage URL (see :func:`pal.sweeps.tuning.optuna_storage`)."""
        return optuna_storage(self.tracking_uri, self.storage)

    def open_run(self) -> None:
        """Create the sweep's parent MLflow run and the job's ``<name>.latest.json`` pointer,
        or take both from the pointer when resuming."""
        from pal.tracking.sweeps import reopen_run, start_sweep_run

        if self.previous and self.grow:  # a new Tune experiment into the study's parent run
            self.parent_run_id = self.previous["parent_run_id"]
            self.run_name = (
                f"{self.job.name}-{self.parent_run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            reopen_run(self.tracking_uri, self.parent_run_id)
            _write_pointer(
                self.pointer, {"parent_run_id": self.parent_run_id, "run_name": self.run_name}
            )
            return
        if self.previous:
            self.parent_run_id = self.previous["parent_run_id"]
            self.run_name = self.previous["run_name"]
            return
        job = self.job
        self.parent_run_id = start_sweep_run(
            self.tracking_uri, job.experiment_name, job.name, dataclasses.asdict(job)
        )
        self.run_name = f"{job.name}-{self.parent_run_id[:8]}"
        _write_pointer(
            self.pointer, {"parent_run_id": self.parent_run_id, "run_name": self.run_name}
        )


def prepare(
    job_path: str | os.PathLike,
    *,
    smoke: bool = False,
    resume: bool = False,
    num_samples: int | None = None,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    seeds: int | None = None,
    variants: list[str] | None = None,
    cells: list[tuple[str, int]] | None = None,
) -> PreparedSweep:
    """Load and check a job before anything starts: the job and the configs at the bounds of its
    search space (:func:`pal.jobs.validate_job`), the data against the base config
    (:func:`pal.loop.plan_experiment`: the dataset is loaded once here, on the driver, so that a
    missing file or pools that do not fit stop the sweep instead of failing every trial), the
    MLflow store, and, with ``resume``, the job's last sweep. For an ablation study, the
    (variant, seed) trials: ``cells`` as given, else ``variants`` (default: all) x the first
    ``seeds`` seeds (:func:`pal.jobs.study_seeds`); with ``seeds``, ``variants`` or ``cells``
    and an existing study of the job, those it has not finished, after checking that the job
    still describes that study (its base config and variants).

    Raises:
        ConfigError: naming the field and what is allowed.
    """
    from pal.loop import plan_experiment
    from pal.tracking.store import check_tracking_store, resolve_tracking_uri
    from pal.tracking.sweeps import finished_cells

    job = load_job(job_path)
    if smoke:
        job = job.smoke_sized()
    storage_path = storage_path or os.environ.get("PAL_STORAGE_PATH") or None
    overrides = {"num_samples": num_samples, "storage_path": storage_path}
    job = dataclasses.replace(job, **{k: v for k, v in overrides.items() if v is not None})
    validate_job(job)
    base = absolute_paths(job.base)
    plan_experiment(make_config(base))
    uri = resolve_tracking_uri(tracking_uri)  # absolute, so trials in other folders find it
    check_tracking_store(uri)

    storage = _storage_root(job.storage_path)
    pointer = f"{storage.rstrip('/')}/{job.name}.latest.json"
    growing = not resume and (seeds is not None or variants is not None or cells is not None)
    if growing and not job.variants:
        raise ConfigError(
            f"--seeds/--variants: job {job.name!r} is a sweep; they choose an ablation study's "
            "trials (a job with variants and seeds)"
        )
    previous = _read_pointer(pointer) if (resume or growing) else None
    if resume and previous is None:
        raise ConfigError(f"--resume: no earlier sweep of job {job.name!r} under {storage}")
    chosen = None
    if job.variants:
        chosen = cells if cells is not None else study_trials(job, seeds, variants)
        if growing and previous is not None:
            check_same_study(job, uri, previous["parent_run_id"])
            done = finished_cells(uri, previous["parent_run_id"])
            chosen = [c for c in chosen if c not in done]
    grow = growing and previous is not None
    return PreparedSweep(job, base, uri, storage, pointer, previous, chosen, grow)


def build_tuner(prepared: PreparedSweep, resources, verbose: int = 1, fault=None):
    """Ray Tune's ``Tuner`` for a prepared sweep whose run is open (restored from its folder
    when resuming): the search space with the base config, Optuna or a grid, ASHA when asked,
    ``resources`` per trial (:func:`pal.sweeps.tuning.trial_resources`), checkpoints and
    failure retries."""
    from ray import tune

    job = prepared.job
    sweep_info = {
        "name": job.name,
        "tracking_uri": prepared.tracking_uri,
        "experiment_name": job.experiment_name,
        "parent_run_id": prepared.parent_run_id,
        "cpus_per_trial": job.cpus_per_trial,
        "variants": job.variants,
        "fault": fault,
    }
    param_space = {**prepared.base, **to_tune_space(job.search_space), "_sweep": sweep_info}
    if prepared.cells is not None:  # one grid over the study's cells: Tune keeps their order
        cells = [{"variant": v, "seed": seed} for v, seed in prepared.cells]
        param_space["_cell"] = tune.grid_search(cells)
    elif job.seeds:
        param_space["seed"] = tune.grid_search(list(job.seeds))
    trial_fn = tune.with_resources(trainable, resources)
    if prepared.previous and not prepared.grow:
        import sys

        from pal.sweeps import searcher

        # a sweep saved before the searcher moved into this package pickled it as pal.searcher
        sys.modules.setdefault("pal.searcher", searcher)
        return tune.Tuner.restore(
            prepared.run_dir, trainable=trial_fn, param_space=param_space, resume_errored=True
        )
    return tune.Tuner(
        trial_fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode="max",
            search_alg=searcher_for(job, prepared.study_storage, prepared.run_name),
            scheduler=asha_scheduler(job),
            num_samples=job.num_samples,
            max_concurrent_trials=job.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=prepared.run_name,
            storage_path=prepared.storage,
            failure_config=tune.FailureConfig(max_failures=job.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=verbose,
        ),
    )


def collect(prepared: PreparedSweep, grid) -> SweepResult:
    """The outcome of a finished sweep from Tune's ``ResultGrid``: the best configuration by
    :data:`OBJECTIVE`, the variants' table (ablations), Optuna's parameter importances; all
    logged on the sweep's MLflow run, which is closed.

    Raises:
        RuntimeError: every trial failed (the sweep's run is closed ``FAILED``).
    """
    from pal.tracking.sweeps import finish_sweep_run, finished_finals

    job, uri, parent_run_id = prepared.job, prepared.tracking_uri, prepared.parent_run_id
    errored = sum(1 for r in grid if r.error is not None)
    ok = [r for r in grid if r.error is None and r.metrics and OBJECTIVE in r.metrics]
    if not ok:
        finish_sweep_run(uri, parent_run_id, None, None, status="FAILED")
        raise RuntimeError(
            f"sweep {job.name!r}: all {len(grid)} trials failed; see {prepared.run_dir}"
        )
    best = max(ok, key=lambda r: _finite(r.metrics[OBJECTIVE]))
    best_config = {k: v for k, v in best.config.items() if not k.startswith("_")}
    best_config.update(job.variants.get(_trial_variant(best.config), {}))
    if best.config.get("_cell"):
        best_config["seed"] = best.config["_cell"]["seed"]
    variants = {}
    if job.variants:  # the whole study, trials of earlier runs of it included
        variants = variant_table(finished_finals(uri, parent_run_id))
    importances = None
    if searcher_used(job):
        importances = param_importances(prepared.study_storage, prepared.run_name)
    finish_sweep_run(
        uri,
        parent_run_id,
        {
            "best_config": best_config,
            BEST_VAL_AUC: best.metrics[OBJECTIVE],
            TRIALS: len(grid),
            "variants": variants,
        },
        importances,
    )
    return SweepResult(
        job=job,
        best_config=best_config,
        best_val_auc=float(best.metrics[OBJECTIVE]),
        parent_run_id=parent_run_id,
        tracking_uri=uri,
        run_dir=prepared.run_dir,
        n_trials=len(grid),
        n_errored=errored,
        variants=variants,
        result_grid=grid,
    )


def _trial_variant(config: dict) -> str | None:
    """The variant a trial ran (an ablation study's cell), ``None`` for a sweep's trial."""
    cell = config.get("_cell")
    return cell["variant"] if cell else config.get("_variant")


def summary(result: SweepResult, ui: str, job_path: str | os.PathLike) -> str:
    searched = {k: result.best_config[k] for k in result.job.search_space}
    lines = [
        f"sweep {result.job.name}: {result.n_trials} trials ({result.n_errored} errored)",
        f"best {OBJECTIVE} (mean validation accuracy over rounds): {result.best_val_auc:.4f}",
        f"best searched values: {json.dumps(searched)}",
        *(
            f"  {name:<24} {v['trials']} runs  val_auc {v['val_auc_mean']:.4f} "
            f"+- {v['val_auc_std']:.4f}  final test acc {v['final_test_accuracy_mean']:.4f} "
            f"+- {v['final_test_accuracy_std']:.4f}"
            for name, v in result.variants.items()
        ),
        f"MLflow: {result.tracking_uri}, experiment {result.job.experiment_name!r}, "
        f"sweep run {result.parent_run_id}",
        f"open the MLflow UI: {ui}",
        f"resume if interrupted: pal sweep {job_path} --resume   (Tune state in {result.run_dir})",
    ]
    if result.job.variants:
        lines.append(f"verdicts: pal report {result.job.name}")
    return "\n".join(lines)


def _read_pointer(path: str) -> dict | None:
    """The ``<job>.latest.json`` that names a job's last sweep (absolute path or ``s3://``...)."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(path)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(inner) as f:
        return json.loads(f.read().decode())


def _write_pointer(path: str, value: dict) -> None:
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(json.dumps(value).encode())


def _finite(value: float) -> float:
    return value if value == value else float("-inf")


def _storage_root(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())
