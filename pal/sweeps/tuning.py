"""Ray Tune's pieces of a sweep: the search space, a trial's resources, Optuna's searcher and its
parameter importances, ASHA.

Part of :mod:`pal.sweeps`, the only package of ``pal`` that imports Ray Tune (here inside the
functions, when a sweep runs; :mod:`pal.sweeps.searcher` imports it on import). The search space
is plain data in a job file (:mod:`pal.jobs`); :func:`to_tune_space` turns it into Tune's
sampling objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pal.config import ConfigError
from pal.jobs import SweepJob


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


def connected_to_cluster() -> bool:
    """Whether this process is already attached to a Ray cluster it did not start itself."""
    import ray

    if not ray.is_initialized():
        return False
    return len(ray.nodes()) > 1 or bool(os.environ.get("RAY_ADDRESS"))


def trial_resources(job: SweepJob, on_cluster: bool, available: dict[str, float]):
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


def optuna_storage(tracking_uri: str, storage: str) -> str | None:
    """The Optuna study's SQLite URL: beside the MLflow SQLite store, else in the sweep storage."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return prefix + str(Path(tracking_uri[len(prefix) :]).parent / "optuna.db")
    if "://" not in storage:
        return prefix + str(Path(storage) / "optuna.db")
    return None


def searcher_for(job: SweepJob, study_storage: str | None, study_name: str):
    """Tune's searcher for ``job``: Optuna's TPE on the study ``study_name`` (in the SQLite store
    ``study_storage``, else in memory), resumable after the driver died at any moment
    (:class:`pal.sweeps.searcher.ResumableOptunaSearch`); ``None`` for grids."""
    if not searcher_used(job):
        return None  # grids (ablations) use Tune's own variant generator
    import optuna

    from pal.sweeps.searcher import ResumableOptunaSearch

    storage = optuna.storages.RDBStorage(study_storage) if study_storage else None
    return ResumableOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=job.seed),
        study_name=study_name,
        storage=storage,
    )


def searcher_used(job: SweepJob) -> bool:
    """Optuna samples a search space; grids, variants and seed repetitions enumerate instead."""
    if not job.search_space or job.variants or job.seeds:
        return False
    return all(spec[0] != "grid" for spec in job.search_space.values())


def param_importances(study_storage: str | None, study_name: str) -> dict[str, float] | None:
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


def asha_scheduler(job: SweepJob):
    """ASHA, stopping trials early by their rounds, when the job asks for it; else ``None``."""
    if not job.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    rounds = int(job.base.get("rounds", 6))
    return ASHAScheduler(time_attr="training_iteration", max_t=rounds + 1, grace_period=2)
