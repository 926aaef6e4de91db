"""Helpers that several test files share: a strategy's query context, hand-made study runs, a
figure's pixels and a labeling project's CSVs and Label Studio exports.

Test files import these from here, never from one another (fixtures and the fast settings
live in ``conftest.py``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from pal.models import TaskNet, build_backbone
from pal.strategies import QueryContext
from pal.training import Normalizer


# ------------------------------------------------------------------------ strategies
def make_context(data, config, labeled, unlabeled, seed=0) -> QueryContext:
    """The context of one query on ``data``: an untrained CNN task network (seeded), the
    ``labeled`` and ``unlabeled`` indices of its training split, crop augmentation."""
    x = data.x_train
    with torch.random.fork_rng():
        torch.manual_seed(0)
        task = TaskNet(build_backbone("cnn", x.shape[1], tuple(x.shape[-2:])), data.num_classes)
    return QueryContext(
        config=config,
        x=x,
        labels=data.y_train,
        labeled=torch.as_tensor(labeled),
        unlabeled=torch.as_tensor(unlabeled),
        num_classes=data.num_classes,
        task_model=task,
        normalize=Normalizer(x),
        augment_mode="crop",
        seed=seed,
    )


# ------------------------------------------------------------------- reports, verdicts
def run(variant, seed, acc, labeled=(100, 150, 200), strategy=None, **history):
    """A run as pal.tracking.load_study returns it, with test accuracy ``acc`` per round."""
    rounds = range(len(acc))
    return {
        "run_id": f"{variant}-{seed}",
        "run_name": f"{variant}-{seed}",
        "status": "FINISHED",
        "variant": variant,
        "params": {
            "strategy": strategy or variant,
            "seed": str(seed),
            "dataset": "digits",
            "pool_size": "1100",
            "val_size": "100",
        },
        "history": {
            "test_accuracy": dict(zip(rounds, acc, strict=True)),
            "n_labeled": dict(zip(rounds, labeled, strict=True)),
            **history,
        },
    }


LABELED = (100, 150, 200, 250, 300)
BASE = np.array([0.5, 0.6, 0.68, 0.74, 0.78])  # the reference's curve, before its seed's offset


def paired_study(delta, seeds=range(5), noise=0.0, rng_seed=0, variant="pal"):
    """``random`` runs whose curves differ by seed (offsets of a few points) and ``variant`` runs
    of the same seeds: the same seed's reference curve plus ``delta`` plus N(0, ``noise``) noise
    from round 1 on (round 0 is the shared initial pool). The reference runs come in reverse
    order, so pairing by position instead of by seed pairs the wrong runs."""
    rng = np.random.default_rng(rng_seed)
    refs, ours = [], []
    for s in seeds:
        ref = BASE + rng.normal(0.0, 0.03)
        gap = np.r_[0.0, delta + rng.normal(0.0, noise, len(BASE) - 1)]
        refs.append(run("random", s, list(ref), labeled=LABELED))
        ours.append(run(variant, s, list(ref + gap), labeled=LABELED))
    return ours + refs[::-1]


def pixels_of(png, color: str, tol: float = 0.03) -> int:
    """How many pixels of the image at ``png`` have ``color`` (the unblended line colour)."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(png)[..., :3]
    return int((np.abs(image - np.array(to_rgb(color))).max(axis=-1) < tol).sum())


# --------------------------------------------------------------------------- labeling
def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def studio_export(project: Path, answers: Path, r: int, skip: set[str] = frozenset()) -> list:
    """What Label Studio exports (full JSON) after someone answered round ``r``'s tasks with
    ``answers`` and skipped the paths in ``skip``: the imported tasks with annotations."""
    truth = {row["path"]: row["label"] for row in read_csv(answers)}
    tasks = json.loads((project / "rounds" / f"{r:03d}" / "tasks.json").read_text())
    out = []
    for i, task in enumerate(tasks, start=1):
        path = task["data"]["pal_path"]
        annotation = {
            "id": 1000 + i,
            "completed_by": 1,
            "was_cancelled": path in skip,
            "created_at": "2026-12-02T10:00:00.000000Z",
            "updated_at": "2026-12-02T10:00:00.000000Z",
            "lead_time": 2.5,
            "result": []
            if path in skip
            else [
                {
                    "id": f"r{i}",
                    "type": "choices",
                    "from_name": "choice",
                    "to_name": "image",
                    "origin": "manual",
                    "value": {"choices": [truth[path]]},
                }
            ],
        }
        out.append(
            {
                "id": i,
                "data": task["data"],
                "annotations": [annotation],
                "predictions": task.get("predictions", []),
                "total_annotations": 0 if path in skip else 1,
                "cancelled_annotations": 1 if path in skip else 0,
            }
        )
    return out


def fail_writes_of(monkeypatch, name: str):
    """Make every write of a project file named ``name`` (``pal.labeling.project.write_atomic``)
    fail as a full disk does; returns the real ``write_atomic``."""
    import pal.labeling.project as project_module

    real = project_module.write_atomic

    def failing(path, data):
        if path.name == name:
            raise OSError("disk full")
        return real(path, data)

    monkeypatch.setattr(project_module, "write_atomic", failing)
    return real
