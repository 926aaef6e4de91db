"""The model that comes out of ``pal label``: saved per round, ``pal label predict``, and the
Python API (``pal.labeling.open``/``init``) on the digits demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pal import labeling
from pal.cli import main
from pal.labeling.demo import write_demo
from pal.labeling.predict import MODEL_FILE, NoModelError, load_model_file
from tests.helpers import read_csv

FAST = {"epochs_task": 3, "epochs_scoring": 2, "finetune_epochs": 2, "subqueries": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder)
    return folder


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, demo):
    """A project whose first batch (random, label-free) is labeled through the Python API and
    whose second round trained a task network."""
    folder = tmp_path_factory.mktemp("two") / "proj"
    overrides = {**FAST, "data_dir": str(folder.parent / "data")}
    project = labeling.init(folder, demo / "manifest.csv", overrides=overrides)
    first = project.next(20, strategy="random")
    truth = {r["path"]: r["label"] for r in read_csv(demo / "answers.csv")}
    summary = project.label({p: truth[p] for p in first})
    assert summary.labeled == 20
    second = project.next(20)
    assert not set(first) & set(second)
    return project, truth


def test_no_model_before_a_round_trains_one(tmp_path, demo):
    project = labeling.init(tmp_path / "p", demo / "manifest.csv", overrides=FAST)
    with pytest.raises(NoModelError, match="no round trained"):
        project.predict()
    project.next(10, strategy="random")
    assert not (project.folder / "rounds/001" / MODEL_FILE).exists()  # label-free: no network
    with pytest.raises(NoModelError):
        project.model()


def test_the_saved_model_predicts_what_the_round_wrote(two_rounds):
    project, _ = two_rounds
    assert (project.folder / "rounds/002" / MODEL_FILE).is_file()
    model = project.model()
    assert model.round == 2 and model.version == "pal-pal-round-002"
    batch = project.project.batch(2)
    predictions = {p.path: p for p in project.predict([row["path"] for row in batch])}
    for row in batch:  # the round's own predictions (pre-annotations) come from the same network
        assert predictions[row["path"]].label == row["predicted"]
        assert predictions[row["path"]].probability == pytest.approx(
            float(row["probability"]), abs=1e-5
        )


def test_predict_covers_every_pool_image_and_reloads_outside_the_project(two_rounds, demo):
    project, truth = two_rounds
    predictions = project.predict()
    assert {p.path for p in predictions} == set(truth)  # every pool image, labeled or not
    assert all(p.label in project.classes and 0.0 < p.probability <= 1.0 for p in predictions)
    # the file alone rebuilds the network: the same probabilities from the decoded images
    from pal.labeling.pool import load_pool

    data, pool = load_pool(project.project)
    model = load_model_file(project.folder / "rounds/002" / MODEL_FILE)
    rows = np.sort(pool.indices)[:50]
    probs = model.predict(data.x_train[torch.as_tensor(rows)])
    assert probs.shape == (50, 10)
    assert torch.allclose(probs.sum(1), torch.ones(50), atol=1e-5)
    top = probs.max(1)
    for k, i in enumerate(rows):
        assert predictions[k].path == data.ids_train[i]
        assert predictions[k].probability == pytest.approx(float(top.values[k]), abs=1e-6)
    with pytest.raises(ValueError, match="images: expected uint8"):
        model.predict(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_pal_label_predict_writes_the_csv_and_label_studio_tasks(two_rounds, tmp_path):
    project, truth = two_rounds
    out, tasks = tmp_path / "pred.csv", tmp_path / "tasks.json"
    argv = ["label", "predict", str(project.folder), str(out), "--tasks", str(tasks)]
    assert main(argv) == 0
    rows = read_csv(out)
    assert len(rows) == len(truth)
    labeled = project.labels()
    assert {r["path"] for r in rows if r["label"]} == set(labeled)
    assert all(r["label"] == labeled[r["path"]] for r in rows if r["label"])
    items = json.loads(tasks.read_text())
    assert len(items) == len(truth)
    prediction = items[0]["predictions"][0]
    assert prediction["model_version"] == "pal-pal-round-002"
    assert prediction["result"][0]["value"]["choices"][0] == rows[0]["predicted"]
    assert main(["label", "predict", str(project.folder), str(out), "--round", "1"]) == 2
