"""Sweeps against real engines: a local Ray (2 CPUs, no dashboard) and an MLflow server process."""

from __future__ import annotations

import pytest

import pal
from pal.config import ConfigError
from pal.jobs import load_job, validate_job
from pal.sweeps import to_tune_space
from tests.conftest import REPO, child_runs

QUICKSTART = REPO / "tune_jobs" / "quickstart.py"
JOBS = sorted(p for p in (REPO / "tune_jobs").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_every_job_file_and_its_smoke_size_are_valid(path):
    job = load_job(path)
    smoke = job.smoke_sized()
    validate_job(smoke)
    assert smoke.num_samples <= 2 < job.num_samples
    assert set(job.search_space) <= set(pal.Config().to_dict())
    assert set(to_tune_space(job.search_space)) == set(job.search_space)
    assert path.read_text().lstrip().startswith('"""') and "pal sweep" in path.read_text()[:400]


def test_bad_job_files_are_refused_before_any_trial(tmp_path):
    cases = {
        "nojob.py": ("X = 1\n", "must define get_job"),
        "badkey.py": (_job(extra='"num_sample": 2'), "unknown key 'num_sample'"),
        "badspace.py": (_job(space='"lambda1": ["normal", 0, 1]'), "search_space.lambda1"),
        "badrange.py": (_job(space='"lambda1": ["uniform", -1.0, 1.0]'), "lambda1: must be >= 0"),
        "badfield.py": (_job(space='"lamda1": ["uniform", 0.0, 1.0]'), "did you mean 'lambda1'"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_job(path)
    with pytest.raises(ConfigError, match="no such job file"):
        load_job(tmp_path / "absent.py")


def _job(space: str = '"lambda1": ["uniform", 0.0, 1.0]', extra: str = '"seed": 0') -> str:
    return (
        "def get_job():\n"
        f"    return {{'name': 't', 'base': {{'dataset': 'digits'}}, 'search_space': {{{space}}},"
        f" {extra}}}\n"
    )


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_quickstart_smoke_sweep_tracks_every_round(ray_local, mlflow_server, tmp_path):
    import optuna

    result = pal.sweep(
        QUICKSTART, smoke=True, tracking_uri=mlflow_server, storage_path=str(tmp_path / "runs")
    )
    assert result.n_trials == 2 and result.n_errored == 0
    assert set(result.job.search_space) <= set(result.best_config)
    client, parent, runs = child_runs(mlflow_server, result.parent_run_id)
    assert len(runs) == 2
    config_keys = set(pal.Config().to_dict())
    for run in runs:
        assert run.info.status == "FINISHED"
        assert config_keys <= set(run.data.params)
        for key in (
            "val_accuracy",
            "test_accuracy",
            "n_labeled",
            "round_seconds",
            "n_noisy_labels",
        ):
            assert steps(client, run.info.run_id, key) == [0, 1, 2], key
        rates = [k for k in run.data.metrics if k.startswith("query_class_rate/")]
        fractions = [k for k in run.data.metrics if k.startswith("labeled_class_fraction/")]
        assert len(rates) == 10 and len(fractions) == 10
        # PAL's query metrics from round 1 on (ss_std is always finite; a correlation is NaN,
        # and left out, when a sampled recipe collapses a head to a constant)
        assert steps(client, run.info.run_id, "ss_std") == [1, 2]
        assert steps(client, run.info.run_id, "scoring/rotation_train_accuracy") == [1, 2]
        assert run.data.tags["pal.sweep"] == "quickstart" and run.data.tags["ray.node"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "learning_curve.png", "rounds"} <= artifacts
    # Tune's reports and MLflow's metrics are one dict per round (RoundRecord.metrics): the
    # same keys, less those whose every value was NaN (MLflow leaves NaN out)
    from ray.tune import result as tune_result

    tune_own = {
        *tune_result.AUTO_RESULT_KEYS,
        tune_result.DONE,
        tune_result.TRIAL_ID,
        tune_result.EXPERIMENT_TAG,
        tune_result.SHOULD_CHECKPOINT,
    }
    by_trial = {run.data.tags["ray.trial_id"]: run for run in runs}
    for trial in result.result_grid:
        frame = trial.metrics_dataframe
        reported = {
            key
            for key in frame.columns
            if key not in tune_own and not key.startswith("config/") and frame[key].notna().any()
        }
        logged = set(by_trial[trial.metrics["trial_id"]].data.metrics)
        assert reported == logged
        assert {"val_auc", "round", "query_class_rate/0", "ss_std", "sd_std/2"} <= logged
    assert parent.data.tags.get("pal.kind") == "sweep"
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_auc"] == pytest.approx(result.best_val_auc)
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"job.yaml", "best_config.json", "param_importances.png"} <= parent_artifacts
    # the Optuna study sits in SQLite beside Tune's state (MLflow here is a server)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}")
    study = optuna.load_study(study_name=result.run_dir.rsplit("/", 1)[1], storage=storage)
    assert len(study.trials) == 2
    assert all(
        {"lambda1", "lambda2", "lr_task", "optimizer"} <= set(t.params) for t in study.trials
    )
    assert {t.state.name for t in study.trials} == {"COMPLETE"}


@pytest.mark.slow
def test_a_trial_failing_after_round_1_resumes_at_round_2(ray_local, mlflow_server, tmp_path):
    marker = tmp_path / "failed-once"
    result = pal.sweep(
        QUICKSTART,
        smoke=True,
        num_samples=1,
        tracking_uri=mlflow_server,
        storage_path=str(tmp_path / "runs"),
        _fault={"round": 1, "marker": str(marker)},
    )
    assert marker.exists()  # the fault really fired
    assert result.n_errored == 0
    client, _, runs = child_runs(mlflow_server, result.parent_run_id)
    assert len(runs) == 1  # the restarted trial logged into the same run
    run_id = runs[0].info.run_id
    assert client.get_run(run_id).data.tags["pal.resumed_at_round"] == "2"
    for key in ("val_accuracy", "test_accuracy", "n_labeled"):
        assert steps(client, run_id, key) == [0, 1, 2], key
    assert result.result_grid[0].metrics["round"] == 2


def write_job(path, base: str, space: str, extra: str = "") -> str:
    path.write_text(
        "def get_job():\n"
        f"    return {{'name': '{path.stem}', 'base': {{{base}}}, 'search_space': {{{space}}},"
        f" 'cpus_per_trial': 1, 'max_concurrent_trials': 2{extra}}}\n"
    )
    return str(path)


TINY = (
    "'dataset': 'digits', 'pool_size': 300, 'val_size': 30, 'initial_size': 30, "
    "'query_size': 10, 'rounds': 1, 'epochs_task': 1, 'epochs_scoring': 1, 'strategy': 'random'"
)


def test_a_bad_store_or_dataset_stops_the_sweep_before_any_trial(tmp_path):
    from tests.servers import free_port

    job = write_job(tmp_path / "tiny.py", TINY, "'lambda1': ['uniform', 0.0, 1.0]")
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match="tracking_uri"):
        pal.sweep(job, tracking_uri=closed, storage_path=str(tmp_path / "runs"))
    bad_data = write_job(
        tmp_path / "nodata.py",
        TINY.replace("'digits'", f"'npz:{tmp_path / 'absent.npz'}'"),
        "'lambda1': ['uniform', 0.0, 1.0]",
    )
    with pytest.raises(ConfigError, match="absent.npz"):
        pal.sweep(bad_data, storage_path=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()  # no Tune state: nothing was launched


@pytest.mark.slow
def test_a_diverging_trial_fails_and_the_sweep_goes_on(ray_local, tmp_path):
    job = write_job(
        tmp_path / "nan.py",
        TINY.replace("'epochs_task': 1", "'epochs_task': 3"),
        "'lr_task': ['grid', [1e30, 0.05]]",
        ", 'max_failures': 0, 'num_samples': 1",
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = pal.sweep(job, tracking_uri=uri, storage_path=str(tmp_path / "runs"))
    assert result.n_trials == 2 and result.n_errored == 1
    failed = [r for r in result.result_grid if r.error is not None][0]
    assert "diverged" in str(failed.error)
    assert result.best_config["lr_task"] == 0.05
    client, _, runs = child_runs(uri, result.parent_run_id)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
