"""``pal label`` from Python: a project, its next batch, labels in, predictions out.

::

    from pal import labeling

    project = labeling.init("shoes/", pool="manifest.csv")    # or labeling.open("shoes/")
    batch = project.next(50)                                  # [path, ...] to label
    project.label({"img/001.jpg": "boot", "img/007.jpg": "sandal"})   # or project.import_file(...)
    batch = project.next(50)                                  # trains, saves its model, chooses
    for p in project.predict():                               # every pool image
        print(p.path, p.label, p.probability)
    model = project.model()                                   # the latest round's task network

Each call holds the project's lock as the command of the same name does, so a script and the
``pal label`` commands can take turns on one project; the files are the commands' own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pal.labeling.importer import ImportSummary, import_annotations, record_annotations
from pal.labeling.imports import Annotation
from pal.labeling.predict import Prediction, SavedModel, load_model, predict
from pal.labeling.project import Project
from pal.results import LabelRound

__all__ = ["LabelingProject", "init", "open"]


class LabelingProject:
    """An open labeling project (see the module docstring); ``project`` is the underlying
    :class:`~pal.labeling.project.Project`."""

    def __init__(self, project: Project):
        self.project = project

    @property
    def folder(self):
        return self.project.folder

    @property
    def classes(self) -> list[str]:
        return self.project.classes

    def next(
        self, n: int, strategy: str | None = None, force: bool = False, **overrides: Any
    ) -> list[str]:
        """Choose the next batch of ``n`` pool images (``pal label next``); returns their
        manifest paths, most informative first. ``overrides``: config keys for this round."""
        from pal.labeling.rounds import next_batch

        with self.project.lock():
            record = next_batch(self.project, n, strategy, force, overrides=overrides or None)
        return [row["path"] for row in self.project.batch(record.round)]

    def last_round(self) -> LabelRound | None:
        """The latest round's record (``round.json``), or ``None`` before the first."""
        rounds = self.project.rounds()
        return self.project.round_record(rounds[-1]) if rounds else None

    def label(self, labels: Mapping[str, str | None]) -> ImportSummary:
        """Add ``path -> class`` to the ledger (``None``: skipped, never offered again), with the
        rules of ``pal label import`` (all or nothing, idempotent)."""
        answers = [
            Annotation(path, label, "labeled" if label is not None else "skipped", row)
            for row, (path, label) in enumerate(labels.items(), start=1)
        ]
        with self.project.lock():
            return record_annotations(self.project, answers, "python")

    def import_file(self, file: str | os.PathLike) -> ImportSummary:
        """Import a Label Studio export or a CSV of ``path,label`` (``pal label import``)."""
        with self.project.lock():
            return import_annotations(self.project, file)

    def labels(self) -> dict[str, str]:
        """Path -> class of every labeled pool image."""
        return self.project.labels()

    def predict(self, paths: list[str] | None = None, round: int | None = None) -> list[Prediction]:
        """The class and probability of ``paths`` (default: every pool image) by the latest
        round's model, or round ``round``'s (``pal label predict``)."""
        return predict(self.project, paths, round)

    def model(self, round: int | None = None) -> SavedModel:
        """The latest round's task network (or round ``round``'s), ready to predict."""
        return load_model(self.project, round)


def open(folder: str | os.PathLike) -> LabelingProject:  # noqa: A001 (the verb of the API)
    """Open the labeling project in ``folder``."""
    return LabelingProject(Project.open(folder))


def init(folder: str | os.PathLike, pool: str | os.PathLike, **options: Any) -> LabelingProject:
    """Make a labeling project in ``folder`` for the manifest ``pool`` (``pal label init``);
    ``options`` as :func:`pal.labeling.setup.init_project` takes them (``config``,
    ``from_sweep``, ``from_run``, ``classes``, ``overrides``, ``tracking_uri``)."""
    from pal.labeling.setup import init_project

    return LabelingProject(init_project(folder, pool, **options))
