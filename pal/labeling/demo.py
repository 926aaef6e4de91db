"""A labeling project to try things on: scikit-learn's digits as image files and a manifest.

:func:`write_demo` writes the ``digits`` dataset (1300 train / 497 test grey 8x8 images) as PNG
files and a ``manifest:PATH`` CSV in which the pool is unlabeled, as in a real project before
anyone has labeled it. The true labels of the pool images go to a separate ``answers.csv``, the
answers an annotator would give::

    folder/
      images/train_00000.png ... train_01299.png, test_00000.png ... test_00496.png
      manifest.csv   path,label,split: test rows labeled, val_per_class val rows per class
                     labeled, every other train image a pool row with an empty label
      answers.csv    path,label: the true label of every pool row
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

__all__ = ["DemoFiles", "answer_batch", "write_demo"]


@dataclasses.dataclass(frozen=True)
class DemoFiles:
    """What :func:`write_demo` wrote.

    Attributes:
        folder: the demo's folder.
        images: the folder of PNG files (``images/train_00000.png``, ``images/test_00000.png``).
        manifest: ``manifest.csv`` (``path,label,split``; load it as ``manifest:<path>``).
        answers: ``answers.csv`` (``path,label``): the true labels of the pool rows.
    """

    folder: Path
    images: Path
    manifest: Path
    answers: Path


def write_demo(folder: Path | str, val_per_class: int = 10) -> DemoFiles:
    """Write scikit-learn's digits as a labeling project into ``folder`` (created if needed).

    Args:
        folder: where to write; must not hold a ``manifest.csv`` already.
        val_per_class: labeled validation images per class, drawn from the train split with
            ``numpy.random.default_rng(0)``; the rest of the train split is the unlabeled pool.

    Returns:
        The paths written, as :class:`DemoFiles`.

    Raises:
        FileExistsError: ``folder`` already holds a ``manifest.csv``.
        ValueError: ``val_per_class`` is negative or more than a class holds.
    """
    from PIL import Image

    from pal.data import load_dataset

    folder = Path(folder)
    files = DemoFiles(folder, folder / "images", folder / "manifest.csv", folder / "answers.csv")
    if files.manifest.exists():
        raise FileExistsError(
            f"{str(files.manifest)!r} exists already; write the demo into a new folder "
            "(or remove that folder's manifest.csv to overwrite the demo)"
        )
    if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0:
        raise ValueError(f"val_per_class: must be an integer >= 0, got {val_per_class!r}")
    digits = load_dataset("digits")
    y_train, y_test = digits.y_train.numpy(), digits.y_test.numpy()
    smallest = int(np.bincount(y_train, minlength=digits.num_classes).min())
    if val_per_class > smallest:
        raise ValueError(
            f"val_per_class: the smallest class of the digits' train split has {smallest} images, "
            f"got {val_per_class}"
        )
    rng = np.random.default_rng(0)
    is_val = np.zeros(len(y_train), dtype=bool)
    for c in range(digits.num_classes):
        is_val[rng.choice(np.flatnonzero(y_train == c), val_per_class, replace=False)] = True

    files.images.mkdir(parents=True, exist_ok=True)
    manifest_rows, answer_rows = [], []
    for split, x, y in (("train", digits.x_train, y_train), ("test", digits.x_test, y_test)):
        pixels = x[:, 0].numpy()  # grey [N, 8, 8]
        for i in range(len(pixels)):
            rel = f"images/{split}_{i:05d}.png"
            Image.fromarray(pixels[i]).save(folder / rel, compress_level=1)
            label = digits.classes[int(y[i])]
            if split == "test":
                manifest_rows.append((rel, label, "test"))
            elif is_val[i]:
                manifest_rows.append((rel, label, "val"))
            else:
                manifest_rows.append((rel, "", "pool"))
                answer_rows.append((rel, label))
    _write_csv(files.answers, ("path", "label"), answer_rows)
    # the manifest last: a folder with a manifest.csv holds a whole demo
    _write_csv(files.manifest, ("path", "label", "split"), manifest_rows)
    return files


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def answer_batch(project, answers: Path | str, out: Path | str) -> int:
    """Play the annotator of the demo: answer the last round's batch from ``answers``
    (``path,label``) and write what Label Studio exports for it (the full JSON export: the
    round's ``tasks.json`` with one annotation each) to ``out``. Returns the annotations written.

    Raises:
        ProjectError: no batch yet, or a path of the batch that ``answers`` does not answer.
    """
    import json

    from pal.labeling.project import ProjectError, write_atomic
    from pal.labeling.studio import FROM_NAME, PATH_KEY, TO_NAME

    rounds = project.rounds()
    if not rounds:
        raise ProjectError("answer: the project has no batch yet (pal label next makes one)")
    with open(answers, newline="") as fh:
        truth = {row["path"]: row["label"] for row in csv.DictReader(fh)}
    tasks = json.loads((project.round_dir(rounds[-1]) / "tasks.json").read_text())
    missing = [t["data"][PATH_KEY] for t in tasks if t["data"][PATH_KEY] not in truth]
    if missing:
        raise ProjectError(f"answers: {answers} does not answer {missing[:3]} ...")
    stamp = "2026-01-01T00:00:00.000000Z"
    export = []
    for i, task in enumerate(tasks, start=1):
        result = {
            "id": f"demo-{i}",
            "type": "choices",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "origin": "manual",
            "value": {"choices": [truth[task["data"][PATH_KEY]]]},
        }
        annotation = {
            "id": i,
            "completed_by": 1,
            "result": [result],
            "was_cancelled": False,
            "created_at": stamp,
            "updated_at": stamp,
            "lead_time": 1.0,
        }
        export.append(
            {
                "id": i,
                "data": task["data"],
                "annotations": [annotation],
                "predictions": task.get("predictions", []),
                "total_annotations": 1,
                "cancelled_annotations": 0,
            }
        )
    write_atomic(Path(out), json.dumps(export, indent=1) + "\n")
    return len(export)
