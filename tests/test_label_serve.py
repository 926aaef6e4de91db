"""``pal label serve``: the ML backend's routes on their own, and live against a real Label
Studio server (the session's, from :func:`tests.conftest.label_studio`).

Label Studio calls the backend itself: it checks ``/health`` and ``/setup`` when the backend is
added, asks ``/predict`` when a task without predictions is opened (``GET /api/tasks/ID``), and
posts each saved annotation to the ``/webhook`` it made with the backend.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pal.labeling import serve as serve_module
from pal.labeling.demo import write_demo
from pal.labeling.project import Project, csv_text
from pal.labeling.rounds import next_batch
from pal.labeling.setup import init_project
from pal.labeling.studio import FROM_NAME, PATH_KEY, TO_NAME, local_files_url
from tests.helpers import read_csv

FAST = dict(epochs_task=3, epochs_scoring=2, finetune_epochs=2, subqueries=2, val_checks=2)


def _make_project(folder: Path, root: Path, n: int = 20):
    """The digits demo below ``folder``, a project on it and a label-free first batch whose
    image URLs are under ``root``."""
    demo = write_demo(folder / "demo")
    project = init_project(
        folder / "project", demo.manifest, overrides={**FAST, "data_dir": str(folder / "data")}
    )
    with project.lock():
        next_batch(project, n, strategy="random", image_url=lambda p: _url(project, root, p))
    return demo, project


def _url(project: Project, root: Path, path: str) -> str:
    return local_files_url(path, root, project.manifest.parent)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    return _make_project(folder, folder)


@pytest.fixture
def backend(made, tmp_path):
    """A backend, without Label Studio, on a copy of the module's project."""
    demo, project = made
    shutil.copytree(project.folder, tmp_path / "project")
    backend = serve_module.Backend(
        tmp_path / "project", port=0, tracking=False, document_root=project.folder.parent
    )
    backend.start()
    yield backend
    backend.stop()


def call(backend, route: str, body=None) -> tuple[int, dict]:
    url = backend.backend_url + route
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def event(path: str | None, label: str | None, action="ANNOTATION_CREATED", image=None) -> dict:
    data = {PATH_KEY: path} if path else {"image": image}
    region = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
              "value": {"choices": [label]}}  # fmt: skip
    annotation = {"id": 7, "task": 3, "result": [region] if label else [],
                  "was_cancelled": label is None}  # fmt: skip
    return {"action": action, "annotation": annotation, "task": {"id": 3, "data": data},
            "project": {"id": 1}}  # fmt: skip


def test_health_setup_and_predict_without_a_model(backend):
    assert call(backend, "/health") == (200, {"status": "UP", "model_class": "pal"})
    assert call(backend, "/")[0] == 200
    assert call(backend, "/setup", {"project": "1.1700000000", "schema": "<View/>"}) == (
        200,
        {"model_version": None},
    )
    path = backend.project.batch(1)[0]["path"]
    tasks = [{"id": 1, "data": {PATH_KEY: path}}, {"id": 2, "data": {"image": "x.png"}}]
    assert call(backend, "/predict", {"tasks": tasks}) == (200, {"results": [[], []]})
    assert call(backend, "/nowhere", {})[0] == 404


def test_a_webhook_writes_the_ledger_once_and_refuses_what_does_not_fit(backend, made):
    demo, _ = made
    project = backend.project
    batch = [row["path"] for row in project.batch(1)]
    before = (project.folder / "labels.csv").read_bytes()

    status, out = call(backend, "/webhook", event(batch[0], "3"))
    assert (status, out["labeled"], out["unchanged"]) == (201, 1, 0)
    rows = project.ledger()
    assert [(r.path, r.label, r.round, r.source, r.status) for r in rows[-1:]] == [
        (batch[0], "3", 1, "label-studio", "labeled")
    ]
    after = (project.folder / "labels.csv").read_bytes()
    # the same event again, and an update that says the same: nothing added
    assert call(backend, "/webhook", event(batch[0], "3"))[1]["unchanged"] == 1
    assert call(backend, "/webhook", event(batch[0], "3", "ANNOTATION_UPDATED"))[0] == 201
    assert (project.folder / "labels.csv").read_bytes() == after

    # a skip, and a task known by its image URL only
    assert call(backend, "/webhook", event(batch[1], None))[1]["skipped"] == 1
    image = backend._image_url(batch[2])
    assert call(backend, "/webhook", event(None, "5", image=image))[1]["labeled"] == 1
    assert project.skipped() == {batch[1]} and project.labels()[batch[2]] == "5"
    after = (project.folder / "labels.csv").read_bytes()

    # refused: a val image, an image outside the pool, an unknown class, no choice
    val = next(r["path"] for r in read_csv(demo.manifest) if r["split"] == "val")
    for bad in (event(val, "1"), event("images/nope.png", "1"), event(batch[3], "cat"),
                {**event(batch[3], "1"), "annotation": {"task": 3, "result": []}}):  # fmt: skip
        status, out = call(backend, "/webhook", bad)
        assert status == 422 and out["status"] == "refused", out
    assert (project.folder / "labels.csv").read_bytes() == after
    assert "refused, the ledger is unchanged" in (project.folder / "serve.log").read_text()
    # other events are answered and ignored
    assert call(backend, "/webhook", {"action": "PROJECT_UPDATED"})[1]["status"] == "ignored"
    assert call(backend, "/webhook", {"action": "ANNOTATIONS_DELETED"})[0] == 200
    assert before != after


def test_predict_answers_with_the_latest_model(backend, monkeypatch):
    from pal.labeling import predict

    class Model:  # a saved model's stand-in: class 2 of 10 for every image
        round, version, classes = 2, "pal-random-round-002", [str(k) for k in range(10)]

        def predict(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 2), 10).float() * 0.75

    monkeypatch.setattr(predict, "model_round", lambda project, round=None: 2)
    monkeypatch.setattr(predict, "load_model", lambda project, round=None: Model())
    monkeypatch.setattr(predict, "model_version", lambda project, round=None: Model.version)
    path, other = [row["path"] for row in backend.project.batch(1)[:2]]
    tasks = [
        {"id": 1, "data": {PATH_KEY: path}},
        {"id": 2, "data": {"image": "http://ls:8080" + backend._image_url(other)}},
        {"id": 3, "data": {"image": "elsewhere.png"}},
    ]
    config = '<View><Image name="img" value="$image"/><Choices name="digit" toName="img"/></View>'
    status, out = call(backend, "/predict", {"tasks": tasks, "label_config": config})
    assert status == 200
    first, second, third = out["results"]
    assert third == [] and first == second
    assert first == [{"model_version": "pal-random-round-002", "score": 0.75, "result": [
        {"from_name": "digit", "to_name": "img", "type": "choices", "value": {"choices": ["2"]}}
    ]}]  # fmt: skip
    assert call(backend, "/setup", {})[1] == {"model_version": "pal-random-round-002"}


def test_a_complete_batch_starts_one_round(backend, monkeypatch):
    from pal.labeling import rounds

    calls = []

    def slow_next_batch(project, n, **kwargs):  # a round 2 of one image, after a second
        calls.append(n)
        time.sleep(1.0)
        pool, _ = project.manifest_paths()
        path = sorted(pool - project.offered())[0]
        project.write_round(2, {"batch.csv": csv_text(["path"], [{"path": path}])})
        return SimpleNamespace(round=2, n=1, strategy="random", val_accuracy=None)

    monkeypatch.setattr(rounds, "next_batch", slow_next_batch)
    batch = [row["path"] for row in backend.project.batch(1)]
    for path in batch[:-1]:
        assert call(backend, "/webhook", event(path, "1"))[0] == 201
    assert calls == []
    assert call(backend, "/webhook", {"action": "START_TRAINING"})[1]["status"] == "waiting"
    # the last answer, three times at once, and a training request: one round
    threads = [
        threading.Thread(target=call, args=(backend, "/webhook", event(batch[-1], "1")))
        for _ in range(3)
    ] + [threading.Thread(target=call, args=(backend, "/train", {}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.wait_idle(30)
    assert calls == [len(batch)]
    assert "round 1 is complete" in (backend.project.folder / "serve.log").read_text()


@pytest.mark.slow
def test_label_studio_live_both_ways(label_studio, tmp_path):
    import httpx
    from label_studio_sdk import LabelStudio

    from pal.labeling import live
    from pal.labeling.predict import model_version, predict

    url, token, root = label_studio
    demo, project = _make_project(tmp_path, root)
    with project.lock():
        pushed = live.push(project, url, token)
    project_id = pushed["project_id"]
    client = LabelStudio(base_url=url, api_key=token)

    def start(port=0):
        backend = serve_module.Backend(
            project.folder, port=port, url=url, token=token, document_root=root,
            overrides=FAST,
        )  # fmt: skip
        backend.start()
        return backend

    # set-up: the backend and its webhook in the Label Studio project, once across a restart
    backend = start()
    backend.stop()
    backend = start(backend.port)
    try:
        backends = client.ml.list(project=project_id)
        assert [b.url for b in backends] == [backend.backend_url]
        hooks = [h.url for h in client.webhooks.list(project=str(project_id))]
        assert hooks == [backend.backend_url + "/webhook"]

        tasks = {t.data[PATH_KEY]: t for t in client.tasks.list(project=project_id)}
        truth = {row["path"]: row["label"] for row in read_csv(demo.answers)}
        batch = [row["path"] for row in project.batch(1)]
        ledger = project.folder / "labels.csv"

        def annotate(path, skip=False):
            region = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                      "value": {"choices": [truth[path]]}}  # fmt: skip
            result = [] if skip else [region]
            return client.annotations.create(id=tasks[path].id, result=result, was_cancelled=skip)

        # (2) an annotation lands in the ledger once, also when its event repeats
        before = len(project.ledger())
        first = annotate(batch[0])
        wait_for(lambda: len(project.ledger()) == before + 1, 30, "the first label")
        row = project.ledger()[-1]
        assert (row.path, row.label, row.source, row.status) == (
            batch[0], truth[batch[0]], "label-studio", "labeled"
        )  # fmt: skip
        saved = ledger.read_bytes()
        client.annotations.update(id=first.id, result=first.result)  # ANNOTATION_UPDATED
        time.sleep(1)
        assert ledger.read_bytes() == saved
        annotate(batch[1], skip=True)
        wait_for(lambda: batch[1] in project.skipped(), 30, "the skip")

        # (3) the last answer of the batch trains round 2 and pushes it
        t0 = time.monotonic()
        for path in batch[2:]:
            annotate(path)
        wait_for(lambda: project.round_dir(2).is_dir(), 600, "round 2")
        assert backend.wait_idle(300)
        seconds = time.monotonic() - t0
        assert len(project.ledger()) == before + len(batch)
        assert project.round_record(2).logged  # in MLflow
        assert Project.open(project.folder).meta["studio"]["rounds"] == [1, 2]
        round_2 = [row["path"] for row in project.batch(2)]
        paths = [t.data[PATH_KEY] for t in client.tasks.list(project=project_id)]
        assert sorted(paths) == sorted(batch + round_2)

        # (1) opening a task without predictions asks the backend: round 2's model answers
        version = model_version(project)
        assert version is not None and version.endswith("round-002")
        opened = httpx.get(
            f"{url}/api/tasks/{tasks[batch[0]].id}", headers={"Authorization": f"Token {token}"}
        ).json()
        [prediction] = opened["predictions"]
        assert prediction["model_version"] == version
        [expected] = predict(project, [batch[0]])
        assert prediction["result"][0]["value"]["choices"] == [expected.label]
        assert prediction["score"] == pytest.approx(expected.probability, abs=1e-5)
        print(f"round 2 trained and pushed {seconds:.1f} s after the last answers")
    finally:
        backend.stop()
    log = (project.folder / "serve.log").read_text()
    assert "Traceback" not in log, log


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not there after {timeout:g} s")
        time.sleep(0.25)
