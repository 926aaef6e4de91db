"""Studies that grow: more seeds, a subset of variants, seed-major order, and seeds added until
the verdicts are decided, against a real local Ray and a real MLflow store."""

from __future__ import annotations

from collections import Counter

import pytest

import pal
from pal.cli import main
from pal.config import ConfigError
from pal.jobs import load_job, study_cells, study_seeds
from pal.studies import until_decided
from pal.tracking import find_study_run, finished_cells, load_study_design
from tests.conftest import child_runs

TINY = (
    "{'dataset': 'digits', 'pool_size': 300, 'val_size': 30, 'initial_size': 30, "
    "'query_size': 15, 'rounds': 2, 'epochs_task': {epochs}, 'lr_task': 0.05, "
    "'batch_size': 32, 'task_backbone': 'cnn'}"
).replace("{epochs}", "%(epochs)d")


def write_job(folder, name, variants, seeds=(0, 1), epochs=3, concurrent=1):
    """An ablation job file on tiny digits; ``variants`` as Python source of a dict."""
    path = folder / f"{name}.py"
    path.write_text(
        "def get_job():\n"
        f"    return {{'name': {name!r}, 'base': {TINY % {'epochs': epochs}},\n"
        f"            'variants': {variants}, 'seeds': {list(seeds)}, 'num_samples': 1,\n"
        f"            'max_concurrent_trials': {concurrent}, 'cpus_per_trial': 1,\n"
        "            'gpus_per_trial': 0}\n"
    )
    return path


def test_seeds_grow_past_the_jobs_and_cells_are_seed_major(tmp_path):
    job = load_job(write_job(tmp_path, "s", "{'a': {'strategy': 'random'}}", seeds=(3, 1)))
    assert study_seeds(job, 1) == [3]
    assert study_seeds(job, 4) == [3, 1, 4, 5]  # the job's own first, then after its largest
    assert study_cells(["x", "y"], [0, 1]) == [("x", 0), ("y", 0), ("x", 1), ("y", 1)]


def test_growth_options_are_refused_before_any_trial(tmp_path, capsys):
    path = write_job(tmp_path, "bad", "{'random': {'strategy': 'random'}}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = dict(tracking_uri=uri, storage_path=str(tmp_path / "runs"), verbose=0)
    with pytest.raises(ConfigError, match=r"^--variants: \['nope'\] not among"):
        pal.sweep(path, variants=["nope"], **common)
    with pytest.raises(ConfigError, match="^--seeds: must be >= 1"):
        pal.sweep(path, seeds=0, **common)
    sweep_job = tmp_path / "sweep.py"
    sweep_job.write_text(
        "def get_job():\n    return {'name': 'sw', 'base': {'dataset': 'digits'},\n"
        "            'search_space': {'lambda1': ['uniform', 0.0, 1.0]}}\n"
    )
    with pytest.raises(ConfigError, match="^--seeds/--variants: job 'sw' is a sweep"):
        pal.sweep(sweep_job, seeds=3, **common)
    argv = ["ablate", str(path), "--tracking-uri", uri, "--storage-path", str(tmp_path / "r")]
    assert main([*argv, "--until-decided"]) == 2
    assert "--max-seeds: --until-decided needs" in capsys.readouterr().err
    assert main([*argv, "--until-decided", "--max-seeds", "5", "--seeds", "4"]) == 2
    assert "chooses its own trials" in capsys.readouterr().err
    assert main([*argv, "--max-seeds", "5"]) == 2
    assert "--max-seeds: only with --until-decided" in capsys.readouterr().err
    assert main([*argv, "--until-decided", "--max-seeds", "2"]) == 2  # the job has 2 seeds
    assert "at least 3 seeds for its first look" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()  # nothing ran


@pytest.mark.slow
def test_a_study_grows_without_rerunning_a_finished_trial(ray_local, tmp_path):
    variants = "{'random': {'strategy': 'random'}, 'entropy': {'strategy': 'entropy'}}"
    path = write_job(tmp_path, "grow", variants)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = dict(tracking_uri=uri, storage_path=str(tmp_path / "runs"), verbose=0)

    first = pal.sweep(path, **common)  # the job's two seeds, one trial at a time
    _, _, runs = child_runs(uri, first.parent_run_id)
    started = sorted(runs, key=lambda r: r.info.start_time)
    order = [(r.data.tags["pal.variant"], int(r.data.params["seed"])) for r in started]
    assert order == [("random", 0), ("entropy", 0), ("random", 1), ("entropy", 1)]  # seed-major
    assert [r.info.run_name for r in started] == [f"{v}-seed{s}" for v, s in order]
    ids = {r.info.run_id for r in runs}

    grown = pal.sweep(path, seeds=3, **common)
    assert grown.parent_run_id == first.parent_run_id and grown.n_trials == 2
    _, parent, runs = child_runs(uri, first.parent_run_id)
    assert ids < {r.info.run_id for r in runs}  # the earlier runs are the same runs
    cells = Counter((r.data.tags["pal.variant"], int(r.data.params["seed"])) for r in runs)
    assert set(cells) == {(v, s) for v in ("random", "entropy") for s in (0, 1, 2)}
    assert set(cells.values()) == {1}  # no trial ran twice
    assert parent.info.status == "FINISHED"

    subset = pal.sweep(path, seeds=4, variants=["entropy"], **common)
    assert subset.n_trials == 1
    assert finished_cells(uri, first.parent_run_id) == {
        *((v, s) for v in ("random", "entropy") for s in (0, 1, 2)),
        ("entropy", 3),
    }
    nothing = pal.sweep(path, seeds=3, **common)
    assert nothing.n_trials == 0 and nothing.parent_run_id == first.parent_run_id

    # the report reads the grown study as one: entropy's 4 seeds pair with random's 3
    rep = pal.report("grow", tracking_uri=uri, out_dir=tmp_path / "rep", log=False)
    (verdict,) = rep.verdicts
    assert verdict.variant == "entropy" and verdict.seeds == ["0", "1", "2"]
    assert verdict.family_size == 1 and verdict.p_value is not None

    # a job that no longer describes its study is refused before a trial starts
    changed = write_job(tmp_path, "grow", variants, epochs=4)
    with pytest.raises(ConfigError, match=r"no longer describes its study .*base\.epochs_task"):
        pal.sweep(changed, seeds=5, **common)
    assert len(finished_cells(uri, first.parent_run_id)) == 7


@pytest.mark.slow
def test_until_decided_adds_seeds_only_where_the_verdict_is_open(ray_local, tmp_path):
    """``broken`` (a task network that cannot learn: 1 epoch at a tiny rate) is far behind
    random in every seed and is decided at the first look; ``entropy`` is not, and gets the
    next batch of seeds with the reference; ``broken`` gets none."""
    variants = (
        "{'random': {'strategy': 'random'}, 'entropy': {'strategy': 'entropy'}, "
        "'broken': {'strategy': 'random', 'lr_task': 1e-6, 'epochs_task': 1}}"
    )
    path = write_job(tmp_path, "decide", variants, seeds=(0, 1, 2), epochs=12, concurrent=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    looks = until_decided(
        path,
        max_seeds=5,
        batch=2,
        boundary="pocock",
        tracking_uri=uri,
        storage_path=str(tmp_path / "runs"),
        verbose=0,
    )
    first = {v.variant: v for v in looks[0].verdicts}
    assert first["broken"].verdict == "worse", first["broken"]
    assert first["broken"].n_seeds == 3
    assert first["entropy"].verdict == "open (3 of 5 seeds)"
    assert looks[0].next_cells == [("random", 3), ("entropy", 3), ("random", 4), ("entropy", 4)]
    last = {v.variant: v for v in looks[-1].verdicts}
    assert last["entropy"].n_seeds == 5 and last["broken"].n_seeds == 3
    assert last["entropy"].verdict in ("better", "worse", "no difference detected")
    assert looks[-1].next_cells == []
    parent = find_study_run(uri, "decide").info.run_id
    assert load_study_design(uri, parent) == {"looks": [3, 5], "boundary": "pocock"}
    done = finished_cells(uri, parent)
    assert ("broken", 3) not in done and ("broken", 4) not in done and len(done) == 13

    # pal report decides the grown study by its recorded design
    rep = pal.report("decide", tracking_uri=uri, out_dir=tmp_path / "rep", log=False)
    by = {v.variant: v for v in rep.verdicts}
    assert by["entropy"].design == {"looks": [3, 5], "boundary": "pocock"}
    assert by["entropy"].p_value == pytest.approx(last["entropy"].p_value)
    assert "group-sequential design: looks at 3, 5 seeds, pocock boundary" in rep.markdown

    # another design for the same study is refused before any trial
    with pytest.raises(ConfigError, match="A design cannot change between looks"):
        until_decided(
            path, max_seeds=7, tracking_uri=uri, storage_path=str(tmp_path / "runs"), verbose=0
        )
