"""Sweeps: every experiment a Ray Tune trial, Optuna searching, MLflow recording every round.

This is the one module of ``pal`` that imports Ray. A trial runs a whole experiment through the
same :class:`pal.loop.Experiment` as ``pal.run_experiment``; it reports and checkpoints after
every round (the experiment's state, the validation history and the MLflow run id), so a trial
that dies resumes at its last finished round and logs into the same MLflow run.

A sweep is described by a *job file*: a Python file whose ``get_job()`` returns plain data::

    def get_job():
        return {
            "name": "quickstart",
            "base": {"dataset": "digits", "rounds": 4, ...},          # pal.Config keys
            "search_space": {"lambda1": ["uniform", 0.0, 2.0],
                             "lr_task": ["loguniform", 1e-3, 1e-1],
                             "optimizer": ["choice", ["sgd", "adam"]],
                             "subqueries": ["randint", 1, 8]},       # high bound inclusive
            "num_samples": 8, "max_concurrent_trials": 2,
            "cpus_per_trial": 1, "gpus_per_trial": 1,   # see "Where trials run" below
            "resources_per_trial": {},                  # custom Ray resources, e.g. {"a100": 1}
            "asha": False, "seed": 0, "max_failures": 2,
            "smoke": {"base": {"rounds": 2, ...}, "num_samples": 2}, # what --smoke changes
        }

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

import copy
import dataclasses
import importlib.util
import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from pal.config import ConfigError, make_config

OBJECTIVE = "val_auc"
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")
JOB_KEYS = {
    "name": str,
    "base": dict,
    "search_space": dict,
    "num_samples": int,
    "max_concurrent_trials": int,
    "cpus_per_trial": (int, float),
    "gpus_per_trial": (int, float),
    "resources_per_trial": dict,
    "asha": bool,
    "seed": int,
    "max_failures": int,
    "storage_path": str,
    "experiment_name": str,
    "variants": dict,
    "seeds": list,
    "smoke": dict,
}


# ---------------------------------------------------------------------------- job files
@dataclasses.dataclass
class SweepJob:
    """A sweep as plain data (see the module docstring for the job-file format)."""

    name: str
    base: dict[str, Any]
    search_space: dict[str, list]
    num_samples: int = 8
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1
    gpus_per_trial: float = 1
    asha: bool = False
    seed: int = 0
    max_failures: int = 2
    storage_path: str = "runs"
    resources_per_trial: dict[str, float] = dataclasses.field(default_factory=dict)
    experiment_name: str = "pal-sweeps"
    variants: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=list)
    smoke: dict[str, Any] = dataclasses.field(default_factory=dict)

    def smoke_sized(self) -> SweepJob:
        """The job with its ``smoke`` overrides applied (``base`` merged key by key)."""
        job = copy.deepcopy(self)
        for key, value in self.smoke.items():
            if key == "base":
                job.base.update(value)
            else:
                setattr(job, key, value)
        job.smoke = {}
        return job


def load_job(path: str | os.PathLike) -> SweepJob:
    """Read a job file and validate it and its configs."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"job: no such job file {str(p)!r}")
    spec = importlib.util.spec_from_file_location(f"pal_job_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(p.resolve().parent))  # job files may share code with their siblings
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(p.resolve().parent))
    if not hasattr(module, "get_job"):
        raise ConfigError(f"job: {str(p)!r} must define get_job() returning the sweep as a dict")
    raw = dict(module.get_job())
    for key, value in raw.items():
        if key not in JOB_KEYS:
            raise ConfigError(f"job: unknown key {key!r} in {str(p)!r}; valid: {list(JOB_KEYS)}")
        wanted = JOB_KEYS[key]
        if not isinstance(value, wanted) or isinstance(value, bool) != (wanted is bool):
            raise ConfigError(f"job: {key} must be {wanted}, got {value!r}")
    raw.setdefault("search_space", {})
    for key in ("name", "base"):
        if key not in raw:
            raise ConfigError(f"job: {str(p)!r} must set {key!r}")
    job = SweepJob(**raw)
    validate_job(job)
    return job


def validate_job(job: SweepJob) -> None:
    """Check every search-space entry and that the base config with sampled values is valid."""
    if job.num_samples < 1:
        raise ConfigError(f"num_samples: must be >= 1, got {job.num_samples}")
    if job.max_concurrent_trials < 1:
        raise ConfigError(f"max_concurrent_trials: must be >= 1, got {job.max_concurrent_trials}")
    for name in job.resources_per_trial:
        if name.upper() in ("CPU", "GPU"):
            raise ConfigError(
                f"resources_per_trial: {name!r} is set by cpus_per_trial / gpus_per_trial"
            )
    config = make_config(job.base)  # raises on a bad base
    for name, overrides in job.variants.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"variants.{name}: must be a dict of config keys, got {overrides!r}")
        make_config(job.base, **overrides)
    for seed in job.seeds:
        make_config(job.base, seed=seed)
    for key, spec in job.search_space.items():
        if key not in config.to_dict():
            make_config(job.base, **{key: None})  # raises the unknown-key error
        if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in DISTRIBUTIONS:
            raise ConfigError(
                f"search_space.{key}: must be [kind, ...] with kind in {list(DISTRIBUTIONS)}, "
                f"got {spec!r}"
            )
        for value in _corners(spec):
            make_config(job.base, **{key: value})


def _corners(spec: list) -> list:
    kind, *args = spec
    if kind in ("choice", "grid"):
        return list(args[0])
    return [args[0], args[1]]


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


def absolute_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Make the config's paths absolute, so trials find them whatever their working directory."""
    out = dict(base)
    if "data_dir" in out:
        out["data_dir"] = str(Path(out["data_dir"]).expanduser().resolve())
    else:
        out["data_dir"] = str(Path("data").resolve())
    dataset = str(out.get("dataset", ""))
    for prefix in ("npz:", "folder:"):
        if dataset.startswith(prefix):
            out["dataset"] = prefix + str(Path(dataset[len(prefix) :]).expanduser().resolve())
    return out


# ---------------------------------------------------------------------------- the trial
def trainable(params: dict[str, Any]) -> None:
    """One Ray Tune trial: one whole experiment, all rounds, resumable after any round.

    ``params`` holds ``pal.Config`` keys plus ``_sweep`` (tracking URI, parent run id, and an
    optional fault hook used by the tests).
    """
    import torch
    from ray import tune

    from pal.loop import Experiment
    from pal.tracking import MLflowTracker

    sweep = params["_sweep"]
    variant = params.get("_variant")
    overrides = sweep["variants"][variant] if variant is not None else {}
    config = make_config({k: v for k, v in params.items() if not k.startswith("_")}, **overrides)
    threads = max(1, int(sweep.get("cpus_per_trial", 1)))
    torch.set_num_threads(threads)
    experiment = Experiment(config)
    run_id, val_history = None, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = json.loads((Path(folder) / "state.json").read_text())
        experiment.load_state_dict(saved["experiment"])
        run_id, val_history = saved["mlflow_run_id"], saved["val_history"]

    context = tune.get_context()
    tags = {
        "ray.trial_id": context.get_trial_id(),
        "ray.node_id": _node_id(),
        "ray.node": socket.gethostname(),
        "ray.node_ip": _node_ip(),
        "pal.sweep": sweep["name"],
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
        run_name=context.get_trial_name(),
        tags=tags,
    )
    run_id = tracker.start()
    try:
        for record in experiment.rounds():
            tracker(record, experiment)
            val_history.append(record.val_accuracy)
            finite = [v for v in val_history if not math.isnan(v)]
            metrics = {
                "round": record.round,
                "n_labeled": record.n_labeled,
                "val_accuracy": record.val_accuracy,
                "test_accuracy": record.test_accuracy,
                OBJECTIVE: sum(finite) / len(finite) if finite else float("nan"),
                "round_seconds": record.seconds,
                "n_noisy_labels": record.n_noisy_labels,
                **{f"query_class_rate/{k}": v for k, v in record.query_class_rates.items()},
                **record.query_metrics,
            }
            with tempfile.TemporaryDirectory() as folder:
                state = {
                    "experiment": experiment.state_dict(),
                    "mlflow_run_id": run_id,
                    "val_history": val_history,
                }
                (Path(folder) / "state.json").write_text(json.dumps(state))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            _fault_hook(sweep.get("fault"), record.round)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")


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


def variant_table(results) -> dict[str, dict[str, float]]:
    """Per variant (ablations): trials, and mean and std over seeds of ``val_auc`` and the last
    round's test accuracy."""
    import numpy as np

    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(r.config.get("_variant", "-"), []).append(r.metrics)
    table = {}
    for name, metrics in groups.items():
        auc = np.array([m[OBJECTIVE] for m in metrics], dtype=float)
        test = np.array([m["test_accuracy"] for m in metrics], dtype=float)
        table[name] = {
            "trials": len(metrics),
            "val_auc_mean": float(auc.mean()),
            "val_auc_std": float(auc.std()),
            "final_test_accuracy_mean": float(test.mean()),
            "final_test_accuracy_std": float(test.std()),
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
    verbose: int = 1,
    _fault: dict | None = None,
) -> SweepResult:
    """Run (or with ``resume=True`` continue) the sweep described by a job file.

    Everything that can be checked is checked before a trial starts: the job, every config the
    search space can produce at its bounds, the dataset, and the MLflow store.
    """
    import ray
    from ray import tune

    from pal.loop import Experiment
    from pal.tracking import (
        check_tracking_store,
        finish_sweep_run,
        resolve_tracking_uri,
        start_sweep_run,
        ui_command,
    )

    job = load_job(job_path)
    if smoke:
        job = job.smoke_sized()
    storage_path = storage_path or os.environ.get("PAL_STORAGE_PATH") or None
    overrides = {"num_samples": num_samples, "storage_path": storage_path}
    job = dataclasses.replace(job, **{k: v for k, v in overrides.items() if v is not None})
    validate_job(job)
    base = absolute_paths(job.base)
    Experiment(make_config(base))  # the dataset loads and the pools fit, or a clear error now
    uri = resolve_tracking_uri(tracking_uri)  # absolute, so trials in other folders find it
    check_tracking_store(uri)

    storage = _storage_root(job.storage_path)
    pointer = f"{storage.rstrip('/')}/{job.name}.latest.json"
    previous = _read_pointer(pointer) if resume else None
    if resume and previous is None:
        raise ConfigError(f"--resume: no earlier sweep of job {job.name!r} under {storage}")

    address = address or os.environ.get("RAY_ADDRESS")
    on_cluster = bool(address) or _connected_to_cluster()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose > 1)
    trial_resources = _trial_resources(job, on_cluster, ray.cluster_resources())

    if previous:
        parent_run_id, run_name = previous["parent_run_id"], previous["run_name"]
    else:
        parent_run_id = start_sweep_run(uri, job.experiment_name, job.name, dataclasses.asdict(job))
        run_name = f"{job.name}-{parent_run_id[:8]}"
        _write_pointer(pointer, {"parent_run_id": parent_run_id, "run_name": run_name})

    sweep_info = {
        "name": job.name,
        "tracking_uri": uri,
        "experiment_name": job.experiment_name,
        "parent_run_id": parent_run_id,
        "cpus_per_trial": job.cpus_per_trial,
        "variants": job.variants,
        "fault": _fault,
    }
    param_space = {**base, **to_tune_space(job.search_space), "_sweep": sweep_info}
    if job.variants:
        param_space["_variant"] = tune.grid_search(list(job.variants))
    if job.seeds:
        param_space["seed"] = tune.grid_search(list(job.seeds))
    trial_fn = tune.with_resources(trainable, trial_resources)
    study_storage = _optuna_storage(uri, storage)
    run_dir = f"{storage.rstrip('/')}/{run_name}"
    if previous:
        tuner = tune.Tuner.restore(
            run_dir, trainable=trial_fn, param_space=param_space, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trial_fn,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode="max",
                search_alg=_searcher(job, study_storage, run_name),
                scheduler=_scheduler(job),
                num_samples=job.num_samples,
                max_concurrent_trials=job.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=job.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=verbose,
            ),
        )
    grid = tuner.fit()
    errored = sum(1 for r in grid if r.error is not None)
    ok = [r for r in grid if r.error is None and r.metrics and OBJECTIVE in r.metrics]
    if not ok:
        finish_sweep_run(uri, parent_run_id, None, None, status="FAILED")
        raise RuntimeError(f"sweep {job.name!r}: all {len(grid)} trials failed; see {run_dir}")
    best = max(ok, key=lambda r: _finite(r.metrics[OBJECTIVE]))
    best_config = {k: v for k, v in best.config.items() if not k.startswith("_")}
    best_config.update(job.variants.get(best.config.get("_variant"), {}))
    variants = variant_table(ok) if job.variants else {}
    finish_sweep_run(
        uri,
        parent_run_id,
        {
            "best_config": best_config,
            "best_val_auc": best.metrics[OBJECTIVE],
            "trials": len(grid),
            "variants": variants,
        },
        _importances(study_storage, run_name) if _searcher_used(job) else None,
    )
    result = SweepResult(
        job=job,
        best_config=best_config,
        best_val_auc=float(best.metrics[OBJECTIVE]),
        parent_run_id=parent_run_id,
        tracking_uri=uri,
        run_dir=run_dir,
        n_trials=len(grid),
        n_errored=errored,
        variants=variants,
        result_grid=grid,
    )
    if verbose:
        print(summary(result, ui_command(uri), job_path))
    return result


def summary(result: SweepResult, ui: str, job_path: str | os.PathLike) -> str:
    searched = {k: result.best_config[k] for k in result.job.search_space}
    lines = [
        f"sweep {result.job.name}: {result.n_trials} trials ({result.n_errored} errored)",
        f"best {OBJECTIVE} (mean validation accuracy over rounds): {result.best_val_auc:.4f}",
        f"best searched values: {json.dumps(searched)}",
        *(
            f"  {name:<24} {v['trials']} seeds  val_auc {v['val_auc_mean']:.4f} "
            f"+- {v['val_auc_std']:.4f}  final test acc {v['final_test_accuracy_mean']:.4f} "
            f"+- {v['final_test_accuracy_std']:.4f}"
            for name, v in result.variants.items()
        ),
        f"MLflow: {result.tracking_uri}, experiment {result.job.experiment_name!r}, "
        f"sweep run {result.parent_run_id}",
        f"open the MLflow UI: {ui}",
        f"resume if interrupted: pal sweep {job_path} --resume   (Tune state in {result.run_dir})",
    ]
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
    if not _searcher_used(job):
        return None  # grids (ablations) use Tune's own variant generator
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(study_storage) if study_storage else None
    return OptunaSearch(
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
