"""Sweep and ablation jobs as plain data: the job-file format, loading it and checking it.

No Ray here: ``pal sweep`` (:mod:`pal.sweeps`) runs a job, ``pal report`` (:mod:`pal.reports`)
reads one to name its study, and a new job is a file, not code in ``pal``.

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
            "cpus_per_trial": 1, "gpus_per_trial": 1,   # see pal.sweeps: where trials run
            "resources_per_trial": {},                  # custom Ray resources, e.g. {"a100": 1}
            "asha": False, "seed": 0, "max_failures": 2,
            "smoke": {"base": {"rounds": 2, ...}, "num_samples": 2}, # what --smoke changes
        }

The search space may hold any config key; of a sweep's best configuration, ``pal label init
--from-sweep`` takes the method keys (the ``method`` group of :class:`pal.config.Config`) to
another pool, and leaves the data, the budget and the machine.

A job with ``variants`` (named config overrides) and ``seeds`` is an ablation study: one trial per
(variant, seed), on a grid; ``pairs`` (variant -> its reference variant) has ``pal report`` compare
each variant with its own reference instead of ``random``, and ``correction`` (``holm``, the
default, or ``none``) is how ``pal report`` holds the family of those comparisons at its error
rate (:mod:`pal.verdicts`). The objective of every job is :data:`OBJECTIVE`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import sys
import typing
from pathlib import Path
from typing import Any

from pal.config import ConfigError, group_of, make_config
from pal.stats import CORRECTIONS
from pal.vocabulary import VAL_AUC

OBJECTIVE = VAL_AUC  # a round's val_auc: the mean validation metric over the rounds so far
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")


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
    pairs: dict[str, str] = dataclasses.field(default_factory=dict)
    correction: str = "holm"
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


def _accepted(hint: Any) -> type | tuple[type, ...]:
    """What a job file may give for a :class:`SweepJob` field of type ``hint`` (an int for a
    float)."""
    origin = typing.get_origin(hint) or hint
    return (int, float) if origin is float else origin


JOB_KEYS = {name: _accepted(hint) for name, hint in typing.get_type_hints(SweepJob).items()}
"""The keys of a job file (:class:`SweepJob`'s fields) and the types each accepts."""


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
    if job.correction not in CORRECTIONS:
        raise ConfigError(f"correction: must be one of {list(CORRECTIONS)}, got {job.correction!r}")
    if job.max_concurrent_trials < 1:
        raise ConfigError(f"max_concurrent_trials: must be >= 1, got {job.max_concurrent_trials}")
    for name in job.resources_per_trial:
        if name.upper() in ("CPU", "GPU"):
            raise ConfigError(
                f"resources_per_trial: {name!r} is set by cpus_per_trial / gpus_per_trial"
            )
    make_config(job.base)  # raises on a bad base
    for name, overrides in job.variants.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"variants.{name}: must be a dict of config keys, got {overrides!r}")
        make_config(job.base, **overrides)
    for variant, reference in job.pairs.items():
        for name in (variant, reference):
            if name not in job.variants:
                raise ConfigError(
                    f"pairs.{variant}: {name!r} is not a variant; variants: {list(job.variants)}"
                )
    for seed in job.seeds:
        make_config(job.base, seed=seed)
    for key, spec in job.search_space.items():
        group_of(key)  # raises the unknown-key error
        if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in DISTRIBUTIONS:
            raise ConfigError(
                f"search_space.{key}: must be [kind, ...] with kind in {list(DISTRIBUTIONS)}, "
                f"got {spec!r}"
            )
        for value in _corners(spec):
            make_config(job.base, **{key: value})


def study_seeds(job: SweepJob, n: int) -> list[int]:
    """The first ``n`` seeds of an ablation study: the job's ``seeds``, then the integers after
    the largest of them (a study grown to ``n`` seeds keeps the seeds it has)."""
    seeds = list(job.seeds)
    following = max(seeds, default=-1) + 1
    while len(seeds) < n:
        seeds.append(following)
        following += 1
    return seeds[:n]


def study_cells(variants: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The (variant, seed) trials of a study, seed-major: every variant of the first seed, then
    of the second, ..., so that a study stopped at any point has whole seeds."""
    return [(variant, seed) for seed in seeds for variant in variants]


def _corners(spec: list) -> list:
    kind, *args = spec
    if kind in ("choice", "grid"):
        return list(args[0])
    return [args[0], args[1]]


def absolute_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Make the config's paths absolute, so trials find them whatever their working directory."""
    out = dict(base)
    if "data_dir" in out:
        out["data_dir"] = str(Path(out["data_dir"]).expanduser().resolve())
    else:
        out["data_dir"] = str(Path("data").resolve())
    if isinstance(out.get("dataset"), str):
        from pal.data import absolute_dataset  # torch: not on the command line's start

        out["dataset"] = absolute_dataset(out["dataset"])
    return out
