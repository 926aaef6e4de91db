"""``pal sweep --resume`` after the driver is interrupted: finished trials are not run again.

Its own module, so the in-process Ray of ``test_sweeps.py`` is shut down before these drivers
start theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest


def pal_sweep(args, cwd, **popen):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pal", "sweep", *args], cwd=cwd, env=env, **popen
    )


def trial_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.`pal.sweep` = 'resume'") if experiments else []
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
