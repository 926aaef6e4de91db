"""Which trials an ablation study runs: (variant, seed) cells, seed-major, and whether a job still
describes the study it would grow.

Part of :mod:`pal.sweeps` (no Ray here). ``pal ablate --seeds N`` / ``--variants a,b`` run the
cells (:func:`study_trials`) the job's study has not finished, into the same parent run, once
:func:`check_same_study` has found that the job still describes the study;
:func:`pal.studies.until_decided` grows a study that way, look by look.
"""

from __future__ import annotations

import dataclasses

from pal.config import ConfigError
from pal.jobs import SweepJob, study_cells, study_seeds


def study_trials(
    job: SweepJob, seeds: int | None, variants: list[str] | None
) -> list[tuple[str, int]]:
    """``variants`` (default: the job's, in its order) x the study's first ``seeds`` seeds
    (default: the job's), seed-major.

    Raises:
        ConfigError: ``--seeds``/``--variants`` naming what is allowed.
    """
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
    chosen = list(job.variants) if variants is None else list(dict.fromkeys(variants))
    unknown = [v for v in chosen if v not in job.variants]
    if unknown or not chosen:
        raise ConfigError(
            f"--variants: {unknown or chosen} not among job {job.name!r}'s variants "
            f"{list(job.variants)}"
        )
    return study_cells(chosen, study_seeds(job, len(job.seeds) if seeds is None else seeds))


def check_same_study(job: SweepJob, tracking_uri: str, parent_run_id: str) -> None:
    """Refuse to grow a study whose job file no longer describes it: trials of two designs
    in one study would be compared as if they were one.

    Raises:
        ConfigError: ``job: ...`` naming the keys that differ.
    """
    from pal.tracking.sweeps import study_params, sweep_params

    try:
        logged = study_params(tracking_uri, parent_run_id)
    except Exception as err:  # the pointer names a run this store does not have
        raise ConfigError(
            f"job: the study of {job.name!r} (parent run {parent_run_id}) is not in "
            f"{tracking_uri!r} ({err}); grow it with the store it was run with"
        ) from None
    now = sweep_params(dataclasses.asdict(job))
    keys = [k for k in now if k.startswith("base.") or k == "variants"]
    differ = [k for k in keys if k in logged and logged[k] != now[k]]
    differ += [k for k in logged if k.startswith("base.") and k not in now]
    if differ:
        shown = "; ".join(f"{k}: study {logged.get(k)!r}, job now {now.get(k)!r}" for k in differ)
        raise ConfigError(
            f"job: {job.name!r} no longer describes its study (parent run {parent_run_id}): "
            f"{shown}; run it as a new study (without --seeds/--variants) or restore the job"
        )
