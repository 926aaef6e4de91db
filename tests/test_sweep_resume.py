"""``pal sweep --resume`` after the driver is interrupted: finished trials are not run again;
and after the driver and its local Ray are killed at the worst moments (a trial's end or start
recorded by the Optuna study, not yet by Tune's saved state), every resume goes on and the sweep
ends with each trial once, in MLflow and in the study.

Its own module, so the in-process Ray of ``test_sweeps.py`` is shut down before these drivers
start theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest


def pal_sweep(args, cwd, **popen):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pal", "sweep", *args], cwd=cwd, env=env, **popen
    )


def trial_runs(uri, sweep="resume"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`pal.sweep` = '{sweep}'"
    runs = client.search_runs(experiments, query) if experiments else []
    return client, [r for r in runs if r.data.tags.get("pal.kind") != "sweep"]


@pytest.mark.slow
def test_resume_after_interrupting_the_driver(tmp_path):
    (tmp_path / "resume.py").write_text(
        "def get_job():\n"
        "    return {'name': 'resume', 'num_samples': 4, 'max_concurrent_trials': 1,\n"
        "            'cpus_per_trial': 1, 'search_space': {'lambda1': ['uniform', 0.0, 1.0]},\n"
        "            'base': {'dataset': 'digits', 'pool_size': 300, 'val_size': 30,\n"
        "                     'initial_size': 30, 'query_size': 10, 'rounds': 2,\n"
        "                     'epochs_task': 15, 'epochs_scoring': 2}}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trial_runs(uri)  # create the store's tables now, not while the driver creates them too
    args = ["resume.py", "--tracking-uri", uri]
    log = (tmp_path / "first.log").open("wb")
    driver = pal_sweep(args, tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    finished = []
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(1)
        _, runs = trial_runs(uri)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished:
            break
    assert finished and driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    time.sleep(2)  # let Tune's periodic state save see the finished trial
    driver.send_signal(signal.SIGINT)
    try:
        driver.wait(timeout=90)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
    client, before = trial_runs(uri)
    done_before = {
        r.data.tags["ray.trial_id"]: r.info.run_id for r in before if r.info.status == "FINISHED"
    }
    assert 1 <= len(done_before) < 4

    resumed = pal_sweep(
        [*args, "--resume"], tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out.decode()[-3000:]
    assert "best val_auc" in out.decode()

    client, after = trial_runs(uri)
    per_trial = Counter(r.data.tags["ray.trial_id"] for r in after)
    assert len(per_trial) == 4 and set(per_trial.values()) == {1}  # one run per trial
    assert all(r.info.status == "FINISHED" for r in after)
    for trial_id, run_id in done_before.items():
        history = client.get_metric_history(run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [0, 1, 2], trial_id  # not logged again
        assert "pal.resumed_at_round" not in client.get_run(run_id).data.tags


# ---------------------------------------------------------------------------- the searcher alone
def test_searcher_takes_a_study_ahead_of_its_saved_state(tmp_path):
    """What a resume meets after a kill: the searcher's saved state is older than the study,
    which has finished one trial and started another that Tune never saw."""
    import optuna

    from pal.sweeps.searcher import TRIAL_ID_ATTR, ResumableOptunaSearch

    def searcher():
        return ResumableOptunaSearch(
            space={"lambda1": optuna.distributions.FloatDistribution(0.0, 1.0)},
            metric="val_auc",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=0),
            study_name="race",
            storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"),
        )

    first = searcher()
    first.save(str(tmp_path / "nothing.pkl"))  # Tune's state before "a" was suggested
    params_a = first.suggest("a")
    first.on_trial_result("a", {"val_auc": 0.5, "training_iteration": 1})
    first.save(str(tmp_path / "after-round-1.pkl"))  # Tune's state: "a" running, 1 round
    first.on_trial_result("a", {"val_auc": 0.6, "training_iteration": 2})
    first.on_trial_complete("a", {"val_auc": 0.6, "training_iteration": 2})
    params_b = first.suggest("b")  # asked for, then the driver is killed
    study = optuna.load_study(study_name="race", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]

    for saved in ("after-round-1.pkl", "nothing.pkl"):  # "a" known to the saved state, or not
        resumed = searcher()
        resumed.restore(str(tmp_path / saved))
        # Tune runs "a" again from its checkpoint: round 2 reported and ended again
        resumed.on_trial_result("a", {"val_auc": 0.6, "training_iteration": 2})
        resumed.on_trial_complete("a", {"val_auc": 0.6, "training_iteration": 2})
        trials = study.get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]  # "b" never ran
        assert trials[0].value == 0.6 and trials[0].params == params_a
        assert trials[0].intermediate_values == {1: 0.5, 2: 0.6}
        assert trials[0].user_attrs[TRIAL_ID_ATTR] == "a"
        assert trials[1].user_attrs[TRIAL_ID_ATTR] == "b" and trials[1].params == params_b
    params_c = resumed.suggest("c")  # the next trial Tune starts
    resumed.on_trial_result("c", {"val_auc": 0.7, "training_iteration": 1})
    resumed.on_trial_complete("c", {"val_auc": 0.7, "training_iteration": 1})
    trials = study.get_trials()
    assert [(t.state.name, t.value) for t in trials] == [
        ("COMPLETE", 0.6),
        ("FAIL", None),
        ("COMPLETE", 0.7),
    ]
    assert trials[2].user_attrs[TRIAL_ID_ATTR] == "c" and trials[2].params == params_c


# ---------------------------------------------------------------------------- kills at the edges
RACE_JOB = (
    "def get_job():\n"
    "    return {'name': 'race', 'num_samples': 3, 'max_concurrent_trials': 1,\n"
    "            'cpus_per_trial': 1, 'search_space': {'lr_task': ['loguniform', 0.02, 0.2],\n"
    "                                                  'rounds': ['choice', [2, 3]]},\n"
    "            'base': {'dataset': 'digits', 'pool_size': 300, 'val_size': 30,\n"
    "                     'initial_size': 30, 'query_size': 10, 'epochs_task': 10,\n"
    "                     'epochs_scoring': 2}}\n"
)
# Every driver stops at each trial's end (the study has recorded it) and after Optuna gives out
# its second trial, and is killed there, in this order (markers name study trials: #1 is asked
# for, never run, and closed FAIL on resume; #2 and #3 are asked for next):
RACE_KILLS = ["ended-0", "asked-1", "ended-2", "ended-3"]
RACE_SKIPPED = ["asked-2", "asked-3"]  # markers made beforehand: no stop there
# Tune saves its state at start and at each trial's second checkpoint since the last save
# (CheckpointConfig(num_to_keep=2)); never on its timer here. A trial checkpoints each round, so
# a trial of rounds 3 (rounds 0 to 3: 4 checkpoints) is saved after its last round and resumes
# past it; one of rounds 2 (3 checkpoints) is saved before it and runs it again on resume.
RACE_PERIOD = "600"  # TUNE_GLOBAL_CHECKPOINT_S


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _processes(session: int, ray_dir: str) -> list[int]:
    """Live processes of a driver's session, or naming its Ray's temp folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            ours = os.getsid(pid) == session
            ours = ours or ray_dir in (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ours and _alive(pid):
            found.append(pid)
    return found


def _stop(driver: subprocess.Popen, ray_dir: str, grace: float = 30.0) -> list[int]:
    """SIGKILL a driver started in a session of its own, and its local Ray (or, if it has exited,
    wait for its Ray to go): the pids of the cluster still alive ``grace`` seconds later, which
    are killed then."""
    if driver.poll() is None:  # not reaped: its pid, the session's id, is not reused
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while (left := _processes(driver.pid, ray_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    driver.wait()
    return left


def _tune_trials(run_dir: Path) -> dict[str, tuple[str, dict]]:
    """Tune's saved state of a sweep: trial id -> (status, last result)."""
    newest = max(run_dir.glob("experiment_state-*.json"))
    trials = {}
    for trial_json, metadata_json in json.loads(newest.read_text())["trial_data"]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        trials[trial["trial_id"]] = (trial["status"], metadata["last_result"])
    return trials


@pytest.mark.slow
def test_resume_after_kills_where_the_study_is_ahead_of_tune(tmp_path):
    """``pal sweep`` killed with its local Ray (SIGKILL) at each trial's end and start, where
    the Optuna study has recorded it and Tune's saved state has not; ``pal sweep --resume``
    each time. Every resume goes on, and the sweep ends with each trial finished once: in MLflow
    with every round once, in the study with its last round's value, in Tune's results."""
    import optuna

    from pal.sweeps.searcher import HANG_ENV, TRIAL_ID_ATTR

    (tmp_path / "race.py").write_text(RACE_JOB)
    markers = tmp_path / "markers"
    markers.mkdir()
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trial_runs(uri)  # create the store's tables now, not while the driver creates them too
    command = [sys.executable, "-m", "pal", "sweep", "race.py", "--tracking-uri", uri]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_dir}
    env.update({HANG_ENV: str(markers), "TUNE_GLOBAL_CHECKPOINT_S": RACE_PERIOD})
    env.pop("RAY_ADDRESS", None)
    for name in RACE_SKIPPED:
        (markers / name).touch()
    kills, resumed_at, survivors, drivers = [], set(), [], []
    try:
        for attempt in range(len(RACE_KILLS) + 1):
            log = tmp_path / f"driver-{attempt}.log"
            with log.open("wb") as out:
                driver = subprocess.Popen(
                    command + (["--resume"] if attempt else []),
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            drivers.append(driver)
            deadline = time.monotonic() + 240
            while driver.poll() is None and time.monotonic() < deadline:
                new = sorted({p.name for p in markers.iterdir()} - {*kills, *RACE_SKIPPED})
                if new:
                    break
                time.sleep(0.1)
            if driver.poll() is not None:
                break
            assert new, log.read_text()[-3000:]
            survivors += _stop(drivers.pop(), ray_dir)
            kills.append(new[0])

            # the kill came where the study is ahead of Tune's saved state
            pointer = json.loads((tmp_path / "runs" / "race.latest.json").read_text())
            study = optuna.load_study(
                study_name=pointer["run_name"], storage=f"sqlite:///{tmp_path / 'optuna.db'}"
            )
            edge, number = new[0].split("-")
            trial = study.trials[int(number)]
            tune_trials = _tune_trials(tmp_path / "runs" / pointer["run_name"])
            if edge == "ended":
                assert trial.state.name == "COMPLETE"
                status, last = tune_trials[trial.user_attrs[TRIAL_ID_ATTR]]
                assert status != "TERMINATED"  # Tune runs it again
                rounds = trial.params["rounds"]
                saved_after_last = last["training_iteration"] == rounds + 1
                assert saved_after_last == (rounds == 3), (rounds, last["training_iteration"])
                resumed_at.add(rounds)
            else:
                assert trial.state.name == "RUNNING"
                assert trial.user_attrs[TRIAL_ID_ATTR] not in tune_trials  # Tune never saw it
        assert driver.returncode == 0, log.read_text()[-3000:]
    finally:
        for driver in drivers:  # the last one, or any the test left
            survivors += _stop(driver, ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert "best val_auc" in log.read_text()
    assert kills == RACE_KILLS
    assert not survivors  # the local Ray died with its driver
    assert resumed_at == {2, 3}  # trials resumed before their last round, and past it

    # the study: each trial finished once, with the value its last round reported
    client, runs = trial_runs(uri, "race")
    study = optuna.load_study(
        study_name=pointer["run_name"], storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    by_trial = {r.data.tags["ray.trial_id"]: r for r in runs}
    assert len(runs) == 3 and len(by_trial) == 3  # one MLflow run per trial
    assert set(by_trial) == {t.user_attrs[TRIAL_ID_ATTR] for t in done}
    for trial in done:
        run = by_trial[trial.user_attrs[TRIAL_ID_ATTR]]
        assert run.info.status == "FINISHED"
        for key in ("val_accuracy", "val_auc", "test_accuracy"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(trial.params["rounds"] + 1)), (key, steps)
        assert trial.value == run.data.metrics["val_auc"]  # the last round's
        assert int(run.data.params["rounds"]) == trial.params["rounds"]
        assert float(run.data.params["lr_task"]) == pytest.approx(trial.params["lr_task"])

    # Tune's results, which the sweep's outcome is made of, agree
    final = _tune_trials(tmp_path / "runs" / pointer["run_name"])
    assert {t: (s, r["val_auc"]) for t, (s, r) in final.items()} == {
        t.user_attrs[TRIAL_ID_ATTR]: ("TERMINATED", t.value) for t in done
    }
    sweep_run = client.get_run(pointer["parent_run_id"])
    assert sweep_run.info.status == "FINISHED"
    assert sweep_run.data.metrics["best_val_auc"] == study.best_value
    assert sweep_run.data.metrics["trials"] == 3
