"""Shared fixtures: small real data (scikit-learn's digits) and paths to ../shared/data."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import pal
from pal.data import ImageData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Small enough that a full experiment trains in a few seconds on 2 CPU cores.
FAST = dict(
    dataset="digits",
    pool_size=400,
    val_size=40,
    initial_size=40,
    query_size=20,
    rounds=2,
    epochs_task=2,
    epochs_scoring=2,
    subqueries=2,
    batch_size=32,
    device="cpu",
)


@pytest.fixture(scope="session")
def digits() -> ImageData:
    return pal.load_dataset("digits")


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = SHARED_DATA / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test on the CI machine's two cores without oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory):
    """Point MLflow at a SQLite file of the session, so no test writes into the repo's mlflow/."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray (2 CPUs, no dashboard, loopback-only auth off) for one test module."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` process on 127.0.0.1 for one test module; yields its URI."""
    from tests.servers import start_mlflow_server

    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def child_runs(uri: str, parent_run_id: str):
    """``(client, parent run, runs nested under it)`` of a sweep or study."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return client, parent, runs


class LabelStudioServer(NamedTuple):
    url: str
    token: str  # the admin's API token
    document_root: Path  # Label Studio serves local files below it


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    """A Label Studio server for the session, that may call ML backends and webhooks on
    127.0.0.1 (:data:`tests.servers.LOCAL_ML_ENV`): ``push``/``pull`` and ``serve`` share it."""
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk (pal[studio]) is missing")
    from tests.servers import (
        LOCAL_ML_ENV,
        LabelStudioUnavailable,
        label_studio_command,
        start_label_studio,
    )

    try:
        command = label_studio_command()
    except LabelStudioUnavailable as err:
        pytest.skip(str(err))
    token = secrets.token_hex(20)
    folder = tmp_path_factory.mktemp("label-studio")
    # every test's images lie below the session's base folder: Label Studio may serve them
    root = tmp_path_factory.getbasetemp()
    with start_label_studio(command, folder, token, root, extra_env=LOCAL_ML_ENV) as url:
        yield LabelStudioServer(url, token, root)
