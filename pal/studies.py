"""Studies that grow, and that buy certainty where it is missing: seeds added until decided.

Which trials a study runs is a set of (variant, seed) cells, seed-major
(:func:`pal.sweeps.cells.study_trials`); ``pal ablate --seeds N`` / ``--variants a,b`` run those
the job's study has not finished, into the same parent run, once
:func:`pal.sweeps.cells.check_same_study` has found that the job still describes the study. This
module runs the sweeps (:mod:`pal.sweeps`) and reads the store (:mod:`pal.tracking`) inside its
functions; it imports neither MLflow nor Ray itself.

``pal ablate JOB --until-decided --max-seeds M`` runs an ablation study to its first look (the
job's seeds), then adds seeds in batches only to the comparisons whose verdict is still open,
and stops each when it is decided or at ``M`` seeds. Looking after every batch would inflate the
error rate of a fixed-sample test, so the study is decided by a group-sequential design over the
planned looks (:class:`pal.stats.SequentialDesign`: O'Brien-Fleming by default), with Holm's
correction over the family (:mod:`pal.verdicts`); the design is recorded on the study's parent
run, and ``pal report`` decides the study by it. ``python -m benchmarks.sequential`` measures the
rule's family-wise error under the null and the seeds it saves against a fixed design.

A comparison needs its variant's and its reference's run of every seed up to its next look; a
comparison without a verdict for a reason more seeds cannot mend (a non-finite metric, rounds
that differ) gets none.
"""

from __future__ import annotations

import dataclasses
import os

from pal.config import ConfigError
from pal.jobs import study_seeds
from pal.stats import ALPHA, BOUNDARIES, SequentialDesign
from pal.verdicts import DEFAULT_EFFECT, NO_VERDICT, Verdict, paired_verdicts
from pal.vocabulary import TEST_ACCURACY

DEFAULT_BATCH = 2  # seeds added per look


@dataclasses.dataclass
class Look:
    """One analysis of a study grown until decided: the verdicts at that point and the
    (variant, seed) trials it asked for next (``[]``: the study is done)."""

    verdicts: list[Verdict]
    next_cells: list[tuple[str, int]]


def until_decided(
    job_path: str | os.PathLike,
    *,
    max_seeds: int,
    batch: int = DEFAULT_BATCH,
    boundary: str = "obrien_fleming",
    correction: str | None = None,
    alpha: float = ALPHA,
    smoke: bool = False,
    tracking_uri: str | None = None,
    address: str | None = None,
    storage_path: str | None = None,
    verbose: int = 1,
) -> list[Look]:
    """Grow the job's study until every comparison is decided or has ``max_seeds`` seeds.

    The looks are the job's seeds, then every ``batch`` more, up to ``max_seeds``
    (:meth:`SequentialDesign.planned`). The study is the job's last one when it has one (a
    study run before with the job's seeds is its first look), else a new one.

    Returns:
        Every look's verdicts and the trials it ran next.

    Raises:
        ConfigError: ``--max-seeds``/``--batch``/``--boundary`` naming what is allowed, or a
            study already grown with another design.
    """
    from pal.jobs import load_job
    from pal.reports import check_report_options, reference_variant
    from pal.sweeps.launch import prepare, sweep
    from pal.tracking.studies import load_study, set_sequential_design

    job = load_job(job_path)
    job = job.smoke_sized() if smoke else job
    first = len(job.seeds)
    if not job.variants or first < 3:
        raise ConfigError(
            f"--until-decided: job {job.name!r} must be an ablation study (variants) with at "
            f"least 3 seeds for its first look, got {first}"
        )
    if batch < 1:
        raise ConfigError(f"--batch: must be >= 1, got {batch}")
    if max_seeds <= first:
        raise ConfigError(
            f"--max-seeds: must be more than the job's {first} seeds (its first look), "
            f"got {max_seeds}"
        )
    if boundary not in BOUNDARIES:
        raise ConfigError(f"--boundary: must be one of {list(BOUNDARIES)}, got {boundary!r}")
    check_report_options(correction, alpha, DEFAULT_EFFECT)
    design = SequentialDesign.planned(first, batch, max_seeds, boundary)
    seeds = study_seeds(job, max_seeds)
    order = {(v, s): (seeds.index(s), i) for i, v in enumerate(job.variants) for s in seeds}
    common = dict(
        smoke=smoke, tracking_uri=tracking_uri, address=address, storage_path=storage_path
    )

    # the job's study, if it has one: same job, same design (checked before any trial runs)
    prepared = prepare(
        job_path, smoke=smoke, tracking_uri=tracking_uri, storage_path=storage_path, seeds=first
    )
    uri = prepared.tracking_uri
    if prepared.previous is not None:
        _check_design(uri, prepared.previous["parent_run_id"], design)

    looks: list[Look] = []
    cells = None  # the first look: every variant of the job's seeds
    seen = -1
    while True:
        result = sweep(
            job_path,
            seeds=first if cells is None else None,
            _cells=cells,
            **common,
            verbose=verbose,
        )
        parent = result.parent_run_id
        set_sequential_design(uri, parent, design.to_dict())
        data = load_study(uri, parent)
        runs = [r for r in data["runs"] if r["status"] == "FINISHED"]
        verdicts = paired_verdicts(
            runs,
            TEST_ACCURACY,
            reference_variant(runs),
            pairs=data["pairs"],
            correction=correction or data["correction"] or "holm",
            alpha=alpha,
            design=design,
        )
        done = {(r["variant"], int(r["params"]["seed"])) for r in runs}
        wanted = set()
        for v in verdicts:
            target = _next_look(v, design, first)
            for seed in seeds[: target or 0]:
                wanted |= {(v.variant, seed), (v.reference, seed)}
        cells = sorted(wanted - done, key=lambda c: order.get(c, (len(seeds), 0)))
        looks.append(Look(verdicts, cells))
        if verbose:
            print(look_table(verdicts, design, cells))
        if not cells or len(done) == seen:  # decided, at the last look, or trials that fail
            if cells and verbose:
                print(f"until-decided: no trial of the last batch finished; stopped ({cells})")
            return looks
        seen = len(done)


def _next_look(v: Verdict, design: SequentialDesign, first: int) -> int | None:
    """The seeds comparison ``v`` needs next, ``None`` when it needs none: decided, at the
    last look, or without a verdict for a reason more seeds cannot mend."""
    if v.decided:
        return None
    if v.reason is not None and v.reason != NO_VERDICT:
        return None
    if v.n_seeds < first:  # trials of the first look that failed: run them again
        return first
    return design.next_look(v.n_seeds)


def _check_design(tracking_uri: str, parent_run_id: str, design: SequentialDesign) -> None:
    """Refuse a design other than the one the study was grown with."""
    from pal.tracking.studies import load_study_design

    recorded = load_study_design(tracking_uri, parent_run_id)
    if recorded is not None and recorded != design.to_dict():
        raise ConfigError(
            f"--until-decided: the study (parent run {parent_run_id}) was grown with looks "
            f"{recorded['looks']} ({recorded['boundary']}); this call plans {list(design.looks)} "
            f"({design.boundary}). A design cannot change between looks: use the same "
            "--max-seeds, --batch and --boundary"
        )


def look_table(
    verdicts: list[Verdict], design: SequentialDesign, cells: list[tuple[str, int]]
) -> str:
    """A console table of one look: per comparison its seeds, AUC difference, repeated and
    adjusted p-values and verdict, then what runs next."""
    lines = [
        f"until-decided: looks at {list(design.looks)} seeds ({design.boundary}); "
        f"{verdicts[0].correction if verdicts else 'holm'} over the family",
        f"  {'variant':<24} {'reference':<12} seeds  AUC diff   p        p adj    verdict",
    ]
    for v in verdicts:
        diff = f"{100 * v.auc_diff:+.2f}" if v.auc_diff is not None else "-"
        p = f"{v.p_value:.3g}" if v.p_value is not None else "-"
        q = f"{v.p_adjusted:.3g}" if v.p_adjusted is not None else "-"
        lines.append(
            f"  {v.variant:<24} {v.reference:<12} {v.n_seeds:>5}  {diff:>8}   {p:<8} {q:<8} "
            f"{v.verdict}"
        )
    if cells:
        lines.append(f"  next: {len(cells)} trials ({', '.join(f'{v}/{s}' for v, s in cells)})")
    else:
        lines.append("  done: every comparison decided or at its last look")
    return "\n".join(lines)
