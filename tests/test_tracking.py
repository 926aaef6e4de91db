"""MLflow tracking against real stores: a SQLite file and a real ``mlflow server`` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from mlflow import MlflowClient

import pal
import pal.tasks
from pal import ConfigError
from pal.config import field_names
from pal.loop import Experiment
from pal.tracking import (
    DEFAULT_TRACKING_URI,
    UNDERFIT_TAG,
    MLflowTracker,
    check_tracking_store,
    get_or_create_experiment,
    resolve_tracking_uri,
    run_url,
    ui_command,
)
from tests.conftest import FAST
from tests.servers import free_port, start_mlflow_server

ROUND_KEYS = (
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "n_labeled",
    "n_noisy_labels",
    "round_seconds",
    "query_seconds",
    "train_seconds",
    "eval_seconds",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (each test files its runs under its own experiment)."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def pal_run(store):
    result = pal.run_experiment(**FAST, strategy="pal", tracking_uri=store, experiment_name="pal")
    return result, MlflowClient(store)


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def history(client: MlflowClient, run_id: str, prefix: str) -> dict[int, float]:
    """Step -> sum of every metric whose key starts with ``prefix``."""
    sums: dict[int, float] = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith(prefix):
            for m in client.get_metric_history(run_id, key):
                sums[m.step] = sums.get(m.step, 0.0) + m.value
    return sums


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for info in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, info.path) if info.is_dir else [info.path]
    return out


# ------------------------------------------------------------------ a whole run on SQLite
def test_run_experiment_logs_one_finished_run_with_every_config_key(pal_run):
    result, client = pal_run
    assert result.run_id and result.to_dict()["run_id"] == result.run_id
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "pal"
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert set(run.data.params) == set(field_names())
    assert run.data.params["strategy"] == "pal"
    assert run.data.params["pool_size"] == "400"


def test_round_metrics_have_one_value_per_round(pal_run):
    result, client = pal_run
    rounds = list(range(FAST["rounds"] + 1))
    for key in ROUND_KEYS:
        assert steps(client, result.run_id, key) == rounds, key
    by_step = {m.step: m.value for m in client.get_metric_history(result.run_id, "n_labeled")}
    assert by_step == {r.round: r.n_labeled for r in result.rounds}
    test_acc = client.get_metric_history(result.run_id, "test_accuracy")
    assert {m.step: m.value for m in test_acc} == {r.round: r.test_accuracy for r in result.rounds}


def test_the_run_logs_exactly_the_records_metrics(pal_run):
    result, client = pal_run
    logged = set(client.get_run(result.run_id).data.metrics)
    finite = {k for r in result.rounds for k, v in r.metrics().items() if v == v}  # NaN: not logged
    assert logged == finite
    assert "val_auc" in logged and "round" in logged
    val_auc = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_auc")}
    val = [r.val_accuracy for r in result.rounds]
    assert val_auc == {
        r.round: pytest.approx(sum(val[: r.round + 1]) / (r.round + 1)) for r in result.rounds
    }


def test_experiments_pal_creates_say_they_hold_model_training(pal_run, store):
    from pal.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    result, client = pal_run
    experiment = client.get_experiment(client.get_run(result.run_id).info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == EXPERIMENT_KIND
    # an experiment made without the tag (by an older pal, or by hand) gets it when pal uses it
    bare = client.create_experiment("made-by-hand")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(bare).tags
    assert get_or_create_experiment(client, "made-by-hand", store) == bare
    assert client.get_experiment(bare).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_class_shares_sum_to_one_per_round(pal_run):
    result, client = pal_run
    query = history(client, result.run_id, "query_class_rate/")
    assert sorted(query) == [1, 2]  # round 0 has no query
    assert all(v == pytest.approx(1.0) for v in query.values())
    labeled = history(client, result.run_id, "labeled_class_fraction/")
    assert sorted(labeled) == [0, 1, 2]
    assert all(v == pytest.approx(1.0) for v in labeled.values())
    metrics = client.get_run(result.run_id).data.metrics
    assert {k for k in metrics if k.startswith("query_class_rate/")} == {
        f"query_class_rate/{c}" for c in result.classes
    }


def test_pal_query_metrics_are_logged_from_round_one(pal_run):
    result, client = pal_run
    for key in ("ss_sc_pearson", "ss_sc_spearman"):
        assert steps(client, result.run_id, key) == [1, 2]
    logged = client.get_metric_history(result.run_id, "ss_sc_pearson")
    assert {m.step: m.value for m in logged} == {
        r.round: r.query_metrics["ss_sc_pearson"] for r in result.rounds[1:]
    }


def test_artifacts_config_rounds_and_learning_curve(pal_run, tmp_path):
    result, client = pal_run
    paths = artifact_paths(client, result.run_id)
    assert sorted(paths) == [
        "config.yaml",
        "learning_curve.png",
        "rounds/round_000.json",
        "rounds/round_001.json",
        "rounds/round_002.json",
    ]
    local = Path(client.download_artifacts(result.run_id, "", str(tmp_path)))
    assert yaml.safe_load((local / "config.yaml").read_text()) == result.config.to_dict()
    for record in result.rounds:
        saved = json.loads((local / "rounds" / f"round_{record.round:03d}.json").read_text())
        assert saved["selected"] == record.selected
        assert saved["n_labeled"] == record.n_labeled
    png = local / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_sqlite_artifacts_land_beside_the_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    with MLflowTracker(pal.make_config(**FAST), uri, experiment_name="beside") as tracker:
        pass
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("beside")
    assert experiment.artifact_location == (tmp_path / "store" / "artifacts").as_uri()
    stored = tmp_path / "store" / "artifacts" / tracker.run_id / "artifacts"
    assert (stored / "config.yaml").is_file()
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_no_validation_set_logs_no_val_accuracy(store):
    result = pal.run_experiment(
        **{**FAST, "val_size": 0, "rounds": 0},
        strategy="random",
        tracking_uri=store,
        experiment_name="no-val",
    )
    client = MlflowClient(store)
    assert client.get_metric_history(result.run_id, "val_accuracy") == []
    assert steps(client, result.run_id, "test_accuracy") == [0]


# ------------------------------------------------------------------ resuming
def test_a_resumed_run_has_every_round_exactly_once(store):
    config = pal.make_config(**FAST, strategy="random", seed=3)
    first = Experiment(config)
    tracker = MLflowTracker(config, store, experiment_name="resume")
    run_id = tracker.start()
    round0 = first.run_round()
    tracker(round0, first)
    tracker.finish("FAILED")  # as if the worker died after round 0
    state = json.loads(json.dumps(first.state_dict()))

    client = MlflowClient(store)
    resumed = Experiment(config)
    resumed.load_state_dict(state)
    again = MLflowTracker(config, store, experiment_name="resume", run_id=run_id)
    assert again.start() == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    assert again.logged_rounds == [0]  # rebuilt from the metric history
    again(round0, resumed)  # already in the run: skipped
    records = list(resumed.rounds())
    for record in records:
        again(record, resumed)
    again(records[0], resumed)  # round 1 fed twice: skipped
    again.finish()

    assert again.logged_rounds == [0, 1, 2]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in (*ROUND_KEYS, "labeled_class_fraction/0", "query_class_rate/0"):
        logged = steps(client, run_id, key)
        assert logged == sorted(set(logged)), key  # no step twice
    for key in ROUND_KEYS:
        assert steps(client, run_id, key) == [0, 1, 2], key
    assert steps(client, run_id, "query_class_rate/0") == [1, 2]
    paths = artifact_paths(client, run_id)
    assert [p for p in paths if p.startswith("rounds/")] == [
        "rounds/round_000.json",
        "rounds/round_001.json",
        "rounds/round_002.json",
    ]
    assert set(run.data.params) == set(field_names())  # logged once, when the run was created


def test_underfit_rounds_become_a_run_tag_that_survives_a_resume(store):
    config = pal.make_config(**FAST, strategy="random", seed=4)
    experiment = Experiment(config)
    records = list(experiment.rounds())
    records[0].underfit = ["train_accuracy"]
    records[1].underfit = []
    records[2].underfit = ["train_accuracy", "scoring/rotation_train_accuracy"]
    client = MlflowClient(store)
    with MLflowTracker(config, store, experiment_name="underfit") as tracker:
        tracker(records[0])
        tracker(records[1])
    assert client.get_run(tracker.run_id).data.tags[UNDERFIT_TAG] == "0:train_accuracy"
    with MLflowTracker(config, store, experiment_name="underfit", run_id=tracker.run_id) as again:
        again(records[2])
    assert client.get_run(tracker.run_id).data.tags[UNDERFIT_TAG] == (
        "0:train_accuracy 2:train_accuracy 2:scoring/rotation_train_accuracy"
    )
    with MLflowTracker(config, store, experiment_name="underfit-none") as clean:
        clean(records[1])
    assert UNDERFIT_TAG not in client.get_run(clean.run_id).data.tags


def test_resuming_an_unknown_run_names_run_id(store):
    tracker = MLflowTracker(pal.make_config(**FAST), store, run_id="0" * 32)
    with pytest.raises(ConfigError, match="^run_id: no run"):
        tracker.start()


def test_nested_run_and_tags(store):
    client = MlflowClient(store)
    experiment_id = get_or_create_experiment(client, "nested", store)  # artifacts beside the db
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    tracker = MLflowTracker(
        pal.make_config(**FAST),
        store,
        experiment_name="nested",
        parent_run_id=parent,
        run_name="trial-1",
        tags={"pal.sweep": "demo"},
    )
    with tracker:
        pass
    run = client.get_run(tracker.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["pal.sweep"] == "demo"
    assert run.info.run_name == "trial-1"


def test_a_failing_experiment_ends_its_run_failed(store):
    def boom(record, experiment):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        pal.run_experiment(
            **{**FAST, "rounds": 0},
            strategy="random",
            callbacks=(boom,),
            tracking_uri=store,
            experiment_name="failing",
        )
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert steps(client, runs[0].info.run_id, "test_accuracy") == [0]  # logged before the error


@pytest.mark.parametrize(
    ("error", "status"),
    [(KeyboardInterrupt, "KILLED"), (SystemExit, "KILLED"), (RuntimeError, "FAILED")],
)
def test_the_tracker_ends_its_run_by_how_the_block_ends(store, error, status):
    """Ctrl-C and Tune stopping a trial (``SystemExit`` from ``tune.report``) end the run
    KILLED, any other error FAILED; the block's own error is what the caller sees."""
    config = pal.make_config(**{**FAST, "rounds": 0}, strategy="random")
    name = f"ended-{status}-{error.__name__}"
    with pytest.raises(error), MLflowTracker(config, store, experiment_name=name) as tracker:
        Experiment(config).run((tracker,))
        raise error()
    client = MlflowClient(store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == status
    assert steps(client, tracker.run_id, "test_accuracy") == [0]  # what was logged stays


def test_tracking_off_creates_no_run(store):
    result = pal.run_experiment(
        **{**FAST, "rounds": 0},
        strategy="random",
        tracking=False,
        tracking_uri=store,
        experiment_name="untracked",
    )
    assert result.run_id is None
    assert MlflowClient(store).get_experiment_by_name("untracked") is None


# ------------------------------------------------------------------ the store
def test_resolve_tracking_uri_explicit_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert DEFAULT_TRACKING_URI == "sqlite:///mlflow/mlflow.db"
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert (tmp_path / "mlflow").is_dir()
    assert resolve_tracking_uri("sqlite:///a/b/c.db") == f"sqlite:///{tmp_path / 'a/b/c.db'}"
    assert (tmp_path / "a" / "b").is_dir()
    assert ui_command("sqlite:////srv/mlflow/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:////srv/mlflow/mlflow.db "
        "--artifacts-destination /srv/mlflow/artifacts"
    )
    assert run_url("sqlite:///x.db", "abc") is None


def test_check_tracking_store_accepts_sqlite(tmp_path):
    start = time.monotonic()
    check_tracking_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert time.monotonic() - start < 10
    assert (tmp_path / "new" / "mlflow.db").is_file()


def test_no_server_on_the_port_is_a_config_error_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"^tracking_uri: no MLflow server answers at"):
        check_tracking_store(uri)
    assert time.monotonic() - start < 8


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "tracking_uri: unknown scheme 'foo'"),
        ("./mlruns", "tracking_uri: './mlruns' is a folder store"),
        ("file:///tmp/mlruns", "tracking_uri: 'file:///tmp/mlruns' is a folder store"),
    ],
)
def test_unusable_store_uris_are_config_errors(uri, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        check_tracking_store(uri)


def test_sqlite_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    with pytest.raises(ConfigError, match="^tracking_uri: cannot create the folder"):
        check_tracking_store(f"sqlite:///{tmp_path / 'plain' / 'sub' / 'mlflow.db'}")


def test_bad_tracking_uri_fails_run_experiment_before_training(monkeypatch):
    def forbidden(*args, **kwargs):
        pytest.fail("training started although the tracking store is unusable")

    monkeypatch.setattr(pal.tasks, "train_classifier", forbidden)
    with pytest.raises(ConfigError, match="^tracking_uri:"):
        pal.run_experiment(**FAST, tracking_uri=f"http://127.0.0.1:{free_port()}")


def test_importing_pal_does_not_import_mlflow():
    code = (
        "import sys, pal, pal.loop, pal.results; "
        "assert 'mlflow' not in sys.modules and 'pal.tracking' not in sys.modules, "
        "[m for m in sys.modules if 'mlflow' in m or m == 'pal.tracking'][:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ a real MLflow server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    with start_mlflow_server(folder) as uri:
        yield uri, folder


def test_server_receives_the_run_and_its_artifacts(server):
    uri, folder = server
    check_tracking_store(uri)
    result = pal.run_experiment(
        **{**FAST, "rounds": 1}, strategy="random", tracking_uri=uri, experiment_name="served"
    )
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert set(run.data.params) == set(field_names())
    assert steps(client, result.run_id, "test_accuracy") == [0, 1]
    assert sorted(artifact_paths(client, result.run_id)) == [
        "config.yaml",
        "learning_curve.png",
        "rounds/round_000.json",
        "rounds/round_001.json",
    ]
    # proxied: the server wrote the files into its own artifact folder
    experiment_id = run.info.experiment_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = folder / "artifacts" / experiment_id / result.run_id / "artifacts"
    assert (stored / "config.yaml").is_file() and (stored / "learning_curve.png").is_file()
    url = f"{uri}/#/experiments/{experiment_id}/runs/{result.run_id}"
    assert run_url(uri, result.run_id) == url
    assert ui_command(uri) == f"python -m webbrowser {uri}"


def test_server_run_resumes_by_id(server):
    uri, _ = server
    config = pal.make_config(**{**FAST, "rounds": 1}, strategy="random")
    experiment = Experiment(config)
    record = experiment.run_round()
    with MLflowTracker(config, uri, experiment_name="served-resume") as tracker:
        tracker(record, experiment)
    with MLflowTracker(config, uri, run_id=tracker.run_id) as again:
        again(record, experiment)  # already there
        again(experiment.run_round(), experiment)
    assert steps(MlflowClient(uri), tracker.run_id, "n_labeled") == [0, 1]


def test_a_run_records_where_its_images_lived(pal_run):
    result, client = pal_run
    tag = client.get_run(result.run_id).data.tags["pal.placement"]
    assert "on the device" in tag and "GiB of images" in tag
