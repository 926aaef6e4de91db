"""Sweeps on a cluster: the cluster files, and a real two-worker Ray cluster on this machine.

The cluster files are checked against the JSON schema the installed Ray ships for ``ray up``
and by the autoscaler's own config preparation (what ``ray up`` runs before it launches
anything). The two-worker cluster is Ray's own test utility (``ray.cluster_utils.Cluster``: a
head and two worker raylets, each its own processes) with an MLflow server process on
127.0.0.1; trials checkpoint to a folder both workers reach, as they would to S3 or NFS.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import pal
from tests.conftest import REPO, child_runs
from tests.servers import local_cluster, start_ray_head

CLUSTER_FILES = [REPO / "cluster.yaml", REPO / "cluster.local.yaml"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def commands(config: dict, key: str) -> str:
    return "\n".join(config.get(key, []))


# ---------------------------------------------------------------------- the cluster files
@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_file_validates_against_rays_schema(path):
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = load(path)
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # what `ray up` checks before launching


def test_aws_cluster_has_a_cpu_head_and_autoscaling_gpu_workers():
    config = load(REPO / "cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no trial lands on the head
    (worker,) = [t for name, t in types.items() if name != config["head_node_type"]]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert isinstance(worker["resources"]["GPU"], int) and worker["resources"]["GPU"] >= 1
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_runs_mlflow_on_the_head_and_points_workers_at_it(path):
    config = load(path)
    head = commands(config, "head_start_ray_commands")
    workers = commands(config, "worker_start_ray_commands")
    assert "mlflow/serve.sh" in head and "--host $(hostname -I" in head  # the private address
    assert "0.0.0.0" not in head and "--dashboard-host=127.0.0.1" in head
    assert "export MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    assert workers.index("MLFLOW_TRACKING_URI") < workers.index("ray start --address")
    assert (REPO / "mlflow" / "serve.sh").is_file() and (REPO / "mlflow" / "tunnel.sh").is_file()


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_installs_pal_with_one_ray_version_and_turns_on_token_auth(path):
    config = load(path)
    setup = commands(config, "setup_commands")
    assert config["file_mounts"]["~/pal"] == "."
    assert 'pip install -q -e ~/pal "ray[default,tune]==' in setup  # the client's Ray version
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "export RAY_AUTH_MODE=token" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for line in config[key]:
            if "ray start" in line or "ray stop" in line:
                assert line.startswith("source ~/pal-env.sh"), line  # auth mode set on every node
    assert "ray get-auth-token --generate" in path.read_text()


def test_storage_paths_are_shared_storage():
    aws = commands(load(REPO / "cluster.yaml"), "setup_commands")
    assert "export PAL_STORAGE_PATH=s3://" in aws
    local = commands(load(REPO / "cluster.local.yaml"), "setup_commands")
    assert "export PAL_STORAGE_PATH=/shared/" in local
    assert "every node mounts" in (REPO / "cluster.local.yaml").read_text().split("cluster_name")[0]


def test_the_header_says_how_to_launch_watch_submit_and_tear_down():
    head = (REPO / "cluster.yaml").read_text().split("cluster_name:")[0]
    for needle in (
        "ray up cluster.yaml",
        "ray dashboard cluster.yaml",
        "ray job submit --address http://127.0.0.1:8265 --working-dir . --",
        "ray down cluster.yaml",
        "--resume",
        "per hour",
    ):
        assert needle in head, needle


# ---------------------------------------------------------------------- a real cluster
JOB = """
def get_job():
    return {{
        "name": "{name}",
        "base": {{"dataset": "digits", "pool_size": 300, "val_size": 30, "initial_size": 30,
                  "query_size": 10, "rounds": {rounds}, "epochs_task": {epochs},
                  "epochs_scoring": 2, "subqueries": 2}},
        "seeds": {seeds},
        "variants": {{"pal": {{"strategy": "pal"}}}},
        "num_samples": 1,
        "max_concurrent_trials": 2,
        "cpus_per_trial": 1,
        "gpus_per_trial": 0,
        "resources_per_trial": {{"pal_worker": 1}},
        "max_failures": 2,
    }}
"""


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs and two workers with one CPU and one ``pal_worker`` each."""
    pytest.importorskip("ray")
    with local_cluster(*[{"num_cpus": 1, "resources": {"pal_worker": 1}}] * 2) as made:
        yield made


def history(client, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def test_trial_resources_on_a_cluster_and_on_a_local_ray():
    from pal.config import ConfigError
    from pal.jobs import SweepJob, validate_job
    from pal.sweeps.tuning import trial_resources as _trial_resources

    def job(**kw):
        return SweepJob(name="j", base={}, search_space={}, cpus_per_trial=4, **kw)

    a100 = job(gpus_per_trial=1, resources_per_trial={"a100": 1})
    # on a cluster the GPUs are asked for even with no GPU node up: the autoscaler adds one
    assert _trial_resources(a100, True, {"CPU": 2}).bundles == [{"CPU": 4, "GPU": 1, "a100": 1}]
    plain = job(gpus_per_trial=0.5)
    assert _trial_resources(plain, False, {"CPU": 2}).bundles == [{"CPU": 4}]
    assert _trial_resources(plain, False, {"CPU": 2, "GPU": 1}).bundles == [{"CPU": 4, "GPU": 0.5}]
    with pytest.raises(ConfigError, match="^resources_per_trial: a100=1 but this Ray has 0"):
        _trial_resources(a100, False, {"CPU": 2, "GPU": 1})
    with pytest.raises(ConfigError, match="^resources_per_trial: 'GPU' is set by"):
        validate_job(job(resources_per_trial={"GPU": 1}))


@pytest.mark.slow
def test_a_sweep_places_trials_on_both_workers(cluster, mlflow_server, tmp_path, monkeypatch):
    cluster_, workers = cluster
    job = tmp_path / "two_nodes.py"
    job.write_text(JOB.format(name="two-nodes", rounds=2, epochs=20, seeds=[0, 1]))
    monkeypatch.setenv("PAL_STORAGE_PATH", str(tmp_path / "shared-storage"))
    result = pal.sweep(job, tracking_uri=mlflow_server, address=cluster_.address, verbose=0)
    assert result.run_dir.startswith(str(tmp_path / "shared-storage"))
    assert result.n_trials == 2 and result.n_errored == 0
    client, _, runs = child_runs(mlflow_server, result.parent_run_id)
    assert len(runs) == 2
    nodes = {run.data.tags["ray.node_id"] for run in runs}
    assert nodes == {w.node_id for w in workers}  # one trial on each worker
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("n_labeled", "val_accuracy", "test_accuracy"):
            assert [s for s, _, _ in history(client, run.info.run_id, key)] == [0, 1, 2], key


@pytest.mark.slow
def test_a_worker_lost_mid_trial_costs_at_most_one_round(cluster, mlflow_server, tmp_path):
    cluster_, workers = cluster
    job = tmp_path / "node_loss.py"
    job.write_text(JOB.format(name="node-loss", rounds=3, epochs=2, seeds=[0]))
    marker = tmp_path / "hanging-on"
    keys = ("n_labeled", "val_accuracy", "test_accuracy", "round_seconds")
    before: dict = {}
    lost: list[str] = []

    def take_the_node_away():
        """When the trial hangs after round 1 (logged and checkpointed), stop its node."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.2)
        time.sleep(0.5)
        node_id = marker.read_text().split()[0]  # "<node id> <pid>"
        (node,) = [w for w in workers if w.node_id == node_id]
        client = MlflowClient(mlflow_server)
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`pal.sweep` = 'node-loss'",
        )
        (run,) = [r for r in runs if r.data.tags.get("pal.kind") != "sweep"]
        before.update({key: history(client, run.info.run_id, key) for key in keys})
        lost.append(node_id)
        cluster_.remove_node(node, allow_graceful=False)

    def watch():
        try:
            take_the_node_away()
        except BaseException as err:  # seen by the test, not lost in the thread
            lost.append(err)
            raise

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = pal.sweep(
        job,
        tracking_uri=mlflow_server,
        address=cluster_.address,
        storage_path=str(tmp_path / "shared-storage"),
        verbose=0,
        _fault={"round": 1, "marker": str(marker), "action": "hang", "seconds": 120},
    )
    watcher.join(timeout=10)
    assert lost and isinstance(lost[0], str), f"the node was not taken away: {lost}"
    assert result.n_errored == 0
    client, _, runs = child_runs(mlflow_server, result.parent_run_id)
    (run,) = runs  # the retried trial logged into the same run
    survivor = {w.node_id for w in workers} - set(lost)
    assert run.data.tags["ray.node_id"] in survivor  # it finished on the other worker
    assert run.data.tags["pal.resumed_at_round"] == "2"  # from the checkpoint of round 1
    assert run.info.status == "FINISHED"
    for key in keys:
        after = history(client, run.info.run_id, key)
        assert [s for s, _, _ in after] == [0, 1, 2, 3], key  # each round once: none lost
        assert after[:2] == before[key], key  # rounds 0 and 1 are what was logged before


@pytest.mark.slow
def test_a_token_cluster_takes_sweeps_only_with_its_token(tmp_path):
    """Token authentication as cluster.yaml sets it up: RAY_AUTH_MODE=token on every node and the
    client, the shared token in a file (~/.ray/auth_token there, RAY_AUTH_TOKEN_PATH here)."""
    import secrets
    import subprocess
    import sys

    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    job = tmp_path / "auth_job.py"
    job.write_text(JOB.format(name="auth", rounds=1, epochs=2, seeds=[0]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with start_ray_head(env, resources='{"pal_worker": 1}') as address:

        def pal_sweep(**extra):
            command = [
                sys.executable,
                "-m",
                "pal",
                "sweep",
                str(job),
                "--address",
                address,
                "--tracking-uri",
                uri,
                "--storage-path",
                str(tmp_path / "runs"),
            ]
            return subprocess.run(
                command,
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=150,
                cwd=tmp_path,
            )

        wrong = pal_sweep(RAY_AUTH_TOKEN="not-the-token")
        assert wrong.returncode != 0
        assert "Authentication token is missing or incorrect" in wrong.stderr
        right = pal_sweep()
        assert right.returncode == 0, right.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`pal.sweep` = 'auth'"
    )
    trials = [r for r in runs if r.data.tags.get("pal.kind") != "sweep"]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
