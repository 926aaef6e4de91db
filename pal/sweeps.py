"""Sweeps: every experiment a Ray Tune trial, Optuna searching, MLflow recording every round.

This module and the searcher it uses (:mod:`pal.searcher`) are the ones of ``pal`` that import
Ray. A trial runs a whole experiment through the same :class:`pal.loop.Experiment` as
``pal.run_experiment``; it reports and checkpoints after every round (the experiment's state, the
validation history and the MLflow run id), so a trial that dies resumes at its last finished
round and logs into the same MLflow run.

A sweep is described by a *job file* (:mod:`pal.jobs`: plain data, no Ray). :func:`sweep` runs
one in three steps: :func:`prepare` (check the job, its configs and data, the MLflow store; open
or reopen the sweep's MLflow run), :func:`build_tuner` (Tune's search space, searcher, scheduler,
resources and storage) and :func:`collect` (the best configuration, the variants' table, the
sweep's run closed).

Where trials run: on the Ray cluster at ``address`` (or ``RAY_ADDRESS``, which ``ray job submit``
sets) when there is one, where every trial asks for ``gpus_per_trial`` GPUs as the job says, and
the autoscaler starts GPU workers for them; otherwise on a local Ray started here, where a job's
GPUs are asked for only if this machine has some. ``storage_path`` (trial checkpoints, Tune's
state) is ``--storage-path``, else ``PAL_STORAGE_PATH``, else the job's: on a cluster it must be
storage every node reaches (``s3://...``, or a shared file system). Every trial's MLflow run is
tagged with the node it ran on (``ray.node_id``, ``ray.node``, ``ray.node_ip``).

The objective is ``val_auc``: the mean validation accuracy over the rounds so far (the area under
the learning curve, per round). Test accuracy is reported and logged, never optimised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pal.config import ConfigError, make_config
from pal.jobs import OBJECTIVE, SweepJob, absolute_paths, load_job, validate_job
from pal.studies import check_same_study, study_trials


# ---------------------------------------------------------------------------- the search space
def to_tune_space(search_space: dict[str, list]) -> dict[str, Any]:
    """Plain-data search space -> Ray Tune's sampling objects."""
    from ray import tune

    out = {}
    for key, (kind, *args) in search_space.items():
        if kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        elif kind == "choice":
            out[key] = tune.choice(list(args[0]))
        elif kind == "randint":
            out[key] = tune.randint(args[0], args[1] + 1)  # inclusive high bound
        elif kind == "grid":
            out[key] = tune.grid_search(list(args[0]))
    return out


# ---------------------------------------------------------------------------- the trial
def trainable(params: dict[str, Any]) -> None:
    """One Ray Tune trial: one whole experiment, all rounds, resumable after any round.

    ``params`` holds ``pal.Config`` keys plus ``_sweep`` (tracking URI, parent run id, and an
    optional fault hook used by the tests). Each round reports :meth:`RoundRecord.metrics`
    (the keys MLflow logs) and checkpoints the experiment's state and the MLflow run id.
    """
    import torch
    from ray import tune

    from pal.loop import Experiment
    from pal.tracking import MLflowTracker

    sweep = params["_sweep"]
    cell = params.get("_cell")  # an ablation study's (variant, seed)
    variant = cell["variant"] if cell else params.get("_variant")
    overrides = dict(sweep["variants"][variant]) if variant is not None else {}
    if cell:
        overrides["seed"] = cell["seed"]
    config = make_config({k: v for k, v in params.items() if not k.startswith("_")}, **overrides)
    threads = max(1, int(sweep.get("cpus_per_trial", 1)))
    torch.set_num_threads(threads)
    experiment = Experiment(config)
    run_id = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = json.loads((Path(folder) / "state.json").read_text())
        experiment.load_state_dict(saved["experiment"])
        run_id = saved["mlflow_run_id"]

    context = tune.get_context()
    tags = {
        "ray.trial_id": context.get_trial_id(),
        "ray.node_id": _node_id(),
        "ray.node": socket.gethostname(),
        "ray.node_ip": _node_ip(),
        "pal.sweep": sweep["name"],
        "pal.placement": experiment.placement.describe(),
    }
    if variant is not None:
        tags["pal.variant"] = variant
    if checkpoint is not None:
        tags["pal.resumed_at_round"] = experiment.rounds_done
    tracker = MLflowTracker(
        config,
        tracking_uri=sweep["tracking_uri"],
        experiment_name=sweep["experiment_name"],
        run_id=run_id,
        parent_run_id=sweep["parent_run_id"],
        run_name=f"{variant}-seed{config.seed}"
        if variant is not None
        else context.get_trial_name(),
        tags=tags,
    )
    with tracker:
        for record in experiment.rounds():
            tracker(record, experiment)
            with tempfile.TemporaryDirectory() as folder:
                state = {"experiment": experiment.state_dict(), "mlflow_run_id": tracker.run_id}
                (Path(folder) / "state.json").write_text(json.dumps(state))
                checkpoint = tune.Checkpoint.from_directory(folder)
                tune.report(record.metrics(), checkpoint=checkpoint)
            _fault_hook(sweep.get("fault"), record.round)


def _fault_hook(spec: dict | None, round_: int) -> None:
    """Test hook, once per sweep (a marker file), after ``spec['round']`` is logged and saved:
    ``action`` ``raise`` fails the trial; ``hang`` writes the node id into the marker and
    sleeps, so that a test can take the node away in the middle of the trial."""
    if not spec or round_ != spec["round"]:
        return
    try:
        fd = os.open(spec["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    if spec.get("action", "raise") == "raise":
        os.close(fd)
        raise RuntimeError(f"injected fault after round {round_}")
    import time

    import ray

    os.write(fd, f"{ray.get_runtime_context().get_node_id()} {os.getpid()}\n".encode())
    os.close(fd)
    time.sleep(float(spec.get("seconds", 600)))


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a tag, never worth failing a trial over
        return "unknown"


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a tag, never worth failing a trial over
        return "unknown"


# ---------------------------------------------------------------------------- the driver
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
        test = np.array([m.get("test_accuracy", np.nan) for m in metrics], dtype=float)
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

    from pal.tracking import ui_command

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
    on_cluster = bool(address) or _connected_to_cluster()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose > 1)
    # a resource the trials could never get is refused before the sweep's run is created
    resources = _trial_resources(prepared.job, on_cluster, ray.cluster_resources())
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
        """The Optuna study's storage URL (see :func:`_optuna_storage`)."""
        return _optuna_storage(self.tracking_uri, self.storage)

    def open_run(self) -> None:
        """Create the sweep's parent MLflow run and the job's ``<name>.latest.json`` pointer,
        or take both from the pointer when resuming."""
        from pal.tracking import reopen_run, start_sweep_run

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
    from pal.tracking import check_tracking_store, finished_cells, resolve_tracking_uri

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
    ``resources`` per trial (:func:`_trial_resources`), checkpoints and failure retries."""
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
        return tune.Tuner.restore(
            prepared.run_dir, trainable=trial_fn, param_space=param_space, resume_errored=True
        )
    return tune.Tuner(
        trial_fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode="max",
            search_alg=_searcher(job, prepared.study_storage, prepared.run_name),
            scheduler=_scheduler(job),
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
    from pal.tracking import finish_sweep_run

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
        from pal.tracking import finished_finals

        variants = variant_table(finished_finals(uri, parent_run_id))
    importances = None
    if _searcher_used(job):
        importances = _importances(prepared.study_storage, prepared.run_name)
    finish_sweep_run(
        uri,
        parent_run_id,
        {
            "best_config": best_config,
            "best_val_auc": best.metrics[OBJECTIVE],
            "trials": len(grid),
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


def _connected_to_cluster() -> bool:
    """Whether this process is already attached to a Ray cluster it did not start itself."""
    import ray

    if not ray.is_initialized():
        return False
    return len(ray.nodes()) > 1 or bool(os.environ.get("RAY_ADDRESS"))


def _trial_resources(job: SweepJob, on_cluster: bool, available: dict[str, float]):
    """One bundle per trial: CPUs, GPUs and the job's custom resources.

    On a cluster the job's GPUs are asked for even when no GPU node is up yet (the autoscaler
    starts one for them); on a local Ray started here only when this machine has GPUs, so a job
    written for GPUs still runs on a laptop.

    Raises:
        ConfigError: ``resources_per_trial: ...`` with a local Ray, for a resource it lacks
            (the trials could never get it).
    """
    from ray.tune import PlacementGroupFactory

    gpus = job.gpus_per_trial if (on_cluster or available.get("GPU", 0)) else 0
    bundle = {
        "CPU": float(job.cpus_per_trial),
        **{k: float(v) for k, v in job.resources_per_trial.items()},
    }
    if gpus:
        bundle["GPU"] = float(gpus)
    for name, amount in job.resources_per_trial.items():
        if not on_cluster and available.get(name, 0) < amount:
            raise ConfigError(
                f"resources_per_trial: {name}={amount} but this Ray has "
                f"{available.get(name, 0):g} of it; custom resources are declared by the nodes "
                "(ray start --resources, or resources: in cluster.yaml)"
            )
    return PlacementGroupFactory([bundle])


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


def _optuna_storage(tracking_uri: str, storage: str) -> str | None:
    """The Optuna study's SQLite URL: beside the MLflow SQLite store, else in the sweep storage."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return prefix + str(Path(tracking_uri[len(prefix) :]).parent / "optuna.db")
    if "://" not in storage:
        return prefix + str(Path(storage) / "optuna.db")
    return None


def _searcher(job: SweepJob, study_storage: str | None, study_name: str):
    """Tune's searcher for ``job``: Optuna's TPE on the study ``study_name`` (in the SQLite store
    ``study_storage``, else in memory), resumable after the driver died at any moment
    (:class:`pal.searcher.ResumableOptunaSearch`); ``None`` for grids."""
    if not _searcher_used(job):
        return None  # grids (ablations) use Tune's own variant generator
    import optuna

    from pal.searcher import ResumableOptunaSearch

    storage = optuna.storages.RDBStorage(study_storage) if study_storage else None
    return ResumableOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=job.seed),
        study_name=study_name,
        storage=storage,
    )


def _searcher_used(job: SweepJob) -> bool:
    """Optuna samples a search space; grids, variants and seed repetitions enumerate instead."""
    if not job.search_space or job.variants or job.seeds:
        return False
    return all(spec[0] != "grid" for spec in job.search_space.values())


def _importances(study_storage: str | None, study_name: str) -> dict[str, float] | None:
    """Optuna's parameter importances for the objective; None when they cannot be computed
    (fewer than two finished trials, or no parameter varied)."""
    if study_storage is None:
        return None
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=study_storage)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, KeyError) as err:
        print(f"parameter importances not computed: {err}")
        return None


def _scheduler(job: SweepJob):
    if not job.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    rounds = int(job.base.get("rounds", 6))
    return ASHAScheduler(time_attr="training_iteration", max_t=rounds + 1, grace_period=2)
