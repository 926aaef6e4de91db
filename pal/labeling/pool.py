"""A project's pool: the manifest's images with the ledger laid over them.

:func:`load_pool` is what every command that trains or predicts starts from;
:func:`unlabeled_in_batch` what a round's batch still waits for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pal.config import Config
from pal.data import UNKNOWN_LABEL, ImageData, load_dataset
from pal.labeling.project import Project, ProjectError
from pal.pool import Pool


def load_pool(project: Project, config: Config | None = None) -> tuple[ImageData, Pool]:
    """Decode the manifest (cached after the first time) and lay the ledger over it.

    Returns the manifest's images with the project's classes (``y_train`` holds the ledger's
    labels on the pool and the manifest's on ``val``, :data:`UNKNOWN_LABEL` elsewhere) and the
    :class:`~pal.pool.Pool`: ``indices`` the ``pool`` split, ``val`` the ``val`` split,
    ``labeled`` the ledger's labels in ledger order, ``closed`` what a batch offered or someone
    skipped, so that ``unlabeled`` is what the next batch may offer.

    Raises:
        ProjectError: a ledger path or label the manifest and the classes do not know.
    """
    cfg = config or project.config
    data = load_dataset(cfg.dataset, cfg.data_dir, False, cfg.image_size)
    classes = project.classes
    ids = list(data.ids_train)
    index = {path: i for i, path in enumerate(ids)}
    val = np.asarray(data.val_indices if data.val_indices is not None else [], dtype=np.int64)
    # the manifest's labels, re-indexed to the project's classes (a superset, fixed at init)
    remap = np.asarray([classes.index(c) for c in data.classes] + [UNKNOWN_LABEL], np.int64)
    y_manifest = remap[data.y_train.numpy()]  # UNKNOWN_LABEL (-1) maps to the last entry
    y = np.full(len(ids), UNKNOWN_LABEL, dtype=np.int64)
    y[val] = y_manifest[val]
    labels = project.labels()
    bad = [p for p in labels if p not in index or labels[p] not in classes]
    if bad:
        raise ProjectError(
            f"labels.csv: {len(bad)} rows name a path outside the manifest or an unknown class, "
            f"e.g. {bad[:3]}"
        )
    labeled = np.asarray([index[p] for p in labels], dtype=np.int64)
    y[labeled] = [classes.index(labels[p]) for p in labels]
    in_pool = np.ones(len(ids), dtype=bool)
    in_pool[val] = False
    closed = [index[p] for p in project.skipped() | project.offered() if p in index]
    pool = Pool(np.flatnonzero(in_pool), val, labeled, closed=np.asarray(closed, np.int64))
    y_test = remap[data.y_test.numpy()] if data.y_test is not None else None
    data = dataclasses.replace(
        data,
        y_train=torch.from_numpy(y),
        y_test=torch.from_numpy(y_test) if y_test is not None else None,
        classes=classes,
    )
    return data, pool


def unlabeled_in_batch(project: Project, r: int) -> list[str]:
    """The paths of round ``r``'s batch that are neither labeled nor skipped yet."""
    done = set(project.labels()) | project.skipped()
    return [row["path"] for row in project.batch(r) if row["path"] not in done]
