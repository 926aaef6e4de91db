"""One labeling round: train on everything the ledger holds, choose the next batch, write it.

:func:`next_batch` is the round loop of :mod:`pal.loop` with the user as the oracle: the task
network is trained from scratch on the labeled pool images (as a round of ``pal run`` does, on
the project's config), evaluated on the manifest's ``val`` split, and the project's strategy
chooses ``n`` images among those no batch has offered, nobody labeled and nobody skipped. The
batch is written as ``rounds/NNN/batch.csv`` (path, rank, sub-query, the strategy's scores, the
task network's predicted class and its probability), ``tasks.json`` (Label Studio's import
format, the predictions as pre-annotations) and ``round.json`` (what the round trained on and
measured: a :class:`pal.results.LabelRound`), in one rename. The round is
:class:`pal.learner.Learner`'s, the one :class:`pal.loop.Experiment` runs.

With no label at all, the first batch is chosen without labels by a strategy that can
(:attr:`pal.strategies.Strategy.label_free`; :data:`FIRST_BATCH` by default): PAL's scoring
network learns rotations on a seeded sample of the pool (no class loss), and ``coreset`` takes
the k-center cover of the pool in that network's features; ``pal`` takes ``S_S`` with its
sub-queries (``lambda1`` 0: ``S_C`` needs a class head); ``random`` a seeded draw. On the
digits demo, 50 images: coreset covered 9 classes (3-10 images each), PAL's ``S_S`` 9 but with
38 of the 50 among the 0s, 1s and 8s, the digits that look alike turned, whose rotation is
hardest to tell.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
import torch

from pal.config import Config
from pal.data import UNKNOWN_LABEL, ImageData, load_dataset
from pal.distributed import last_ray_run
from pal.labeling import studio
from pal.labeling.project import Project, ProjectError, csv_text
from pal.learner import Learner
from pal.pool import Pool
from pal.results import LabelRound
from pal.stopping import plateau
from pal.strategies import STRATEGIES, build_strategy, label_free_strategies
from pal.tasks import build_task
from pal.training import ProgressFn

FIRST_BATCH = "coreset"
"""The strategy of a label-free first batch unless ``--strategy`` names another."""


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


def next_batch(
    project: Project,
    n: int,
    strategy: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    image_url=None,
    overrides: dict[str, Any] | None = None,
) -> LabelRound:
    """Choose and write the next batch of ``n`` images (see the module docstring).

    Args:
        project: an open project (the caller holds its lock).
        n: images in the batch.
        strategy: the strategy instead of the config's (with no label: one that can choose
            without, default :data:`FIRST_BATCH`).
        force: go on although the last batch is not all labeled.
        progress: per-epoch callback ``(phase, epoch, epochs)``.
        image_url: ``path -> URL`` of an image in Label Studio (default: the manifest path).
        overrides: config keys for this round only (recorded in ``round.json``).

    Returns:
        The round's record, as written to ``round.json``.

    Raises:
        ProjectError: before any training: the last batch unlabeled (without ``force``), ``n``
            out of range, a strategy that cannot run.
    """
    project.check_manifest()
    rounds = project.rounds()
    r = (rounds[-1] if rounds else 0) + 1
    if rounds and not force:
        waiting = unlabeled_in_batch(project, rounds[-1])
        if waiting:
            raise ProjectError(
                f"round {rounds[-1]}: {len(waiting)} of the {len(project.batch(rounds[-1]))} "
                f"images of its batch are not labeled yet; import their labels (pal label import) "
                "or pass --force to choose the next batch anyway"
            )
    if overrides and "dataset" in overrides:
        raise ProjectError("dataset: a project's pool is its manifest; --set cannot change it")
    cfg = project.config.replace(**(overrides or {}))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data, pool = load_pool(project, cfg)
    timings["load"] = time.perf_counter() - t0
    offerable = pool.unlabeled
    if not isinstance(n, int) or n < 1:
        raise ProjectError(f"n: the batch size must be an integer >= 1, got {n!r}")
    if n > len(offerable):
        raise ProjectError(
            f"n: {n} images asked, but only {len(offerable)} pool images are left to offer"
        )
    labeled = pool.labeled
    label_free = len(labeled) == 0
    name = strategy or (FIRST_BATCH if label_free else cfg.strategy)
    if name not in STRATEGIES:
        raise ProjectError(f"strategy: unknown {name!r}; strategies are {STRATEGIES.names()}")
    if label_free and not STRATEGIES.get(name).label_free:
        raise ProjectError(
            f"strategy: with no label yet the first batch is chosen by one of "
            f"{label_free_strategies()}, got {name!r}"
        )
    cfg = cfg.replace(strategy=name, label_noise=0.0, missing_classes=())
    hw = tuple(data.x_train.shape[-2:])
    STRATEGIES.get(name).check_config(cfg, n, hw, "classification")
    known = set(data.y_train[labeled].tolist())
    if not label_free and len(known) < 2:
        raise ProjectError(
            f"labels: the labeled images hold {len(known)} class; a task network needs two or "
            "more (label a few images of another class, or start with a label-free batch)"
        )

    task = build_task(cfg, data)
    learner = Learner(cfg, data, task, pool, np.empty(0, dtype=np.int64), progress)
    record = LabelRound(
        round=r,
        strategy=name,
        label_free=label_free,
        n=n,
        n_labeled=int(len(labeled)),
        n_offerable=int(len(offerable)),
        placement=learner.placement.describe(),
        labeled_class_counts=_counts(data.y_train[labeled], project.classes),
    )
    model = None
    ray_before = last_ray_run()
    if not label_free:
        trained = learner.train(labeled, pool.val, r)
        model = trained.model
        timings["train"], timings["evaluate"] = trained.train_seconds, trained.eval_seconds
        record.train_accuracy = trained.train_accuracy
        record.val_accuracy = trained.val_accuracy
        record.test_accuracy = trained.test_accuracy
        record.task_epoch = trained.task_epoch
        record.task_epochs = trained.task_epochs
        record.task_fit_attempts = trained.task_fit_attempts
    ctx = learner.context(pool, model, r)
    query, timings["query"] = learner.choose(build_strategy(cfg), ctx, n, label_free)
    predicted = probability = None
    if model is not None:
        t = time.perf_counter()
        confidence, label = learner.confidence(model, ctx.unlabeled)
        record.mean_confidence = float(confidence.mean())  # over the images the query scored
        where = torch.searchsorted(ctx.unlabeled, query.indices)  # offerable is sorted
        predicted, probability = label[where].cpu().numpy(), confidence[where].cpu().numpy()
        timings["predict"] = time.perf_counter() - t
    curve = [project.round_record(k).val_accuracy for k in rounds] + [record.val_accuracy]
    signal = plateau(curve)
    record.val_change, record.val_plateau = signal.change, signal.fired
    ray_run = last_ray_run()
    if ray_run is not None and ray_run is not ray_before:
        record.ray_scoring = dataclasses.asdict(ray_run)
    record.query_metrics = {k: float(v) for k, v in query.metrics.items()}
    record.underfit = learner.underfit(r, record.train_accuracy, query.metrics, query.fit_keys)
    record.predicted_class_shares = (
        _shares(predicted, project.classes) if predicted is not None else {}
    )
    record.seconds = {**timings, "total": time.perf_counter() - t0}
    record.config = cfg.to_dict()

    ids = data.ids_train
    scores = {k: v.float().cpu().numpy() for k, v in query.scores.items()}
    if label_free:
        scores.pop("s_c", None)  # an untrained class head's: not a score of this batch
    rows = []
    for rank, i in enumerate(query.indices.cpu().numpy()):
        row: dict[str, Any] = {"path": ids[i], "rank": rank + 1}
        row["subquery"] = int(scores["subquery"][rank]) if "subquery" in scores else 1
        row.update({k: _num(v[rank]) for k, v in scores.items() if k != "subquery"})
        row["predicted"] = project.classes[predicted[rank]] if predicted is not None else ""
        row["probability"] = _num(probability[rank]) if probability is not None else ""
        rows.append(row)
    fields = list(rows[0])
    url = image_url or (lambda path: path)
    tasks = studio.tasks_json(
        [
            {
                "path": row["path"],
                "image": url(row["path"]),
                "predicted": row["predicted"] or None,
                "probability": row["probability"] if row["probability"] != "" else None,
                "data": {"round": r, "rank": row["rank"], "subquery": row["subquery"]},
            }
            for row in rows
        ],
        model_version=f"pal-{name}-round-{r:03d}",
    )
    project.write_round(
        r,
        {
            "batch.csv": csv_text(fields, rows),
            "tasks.json": json.dumps(tasks, indent=1) + "\n",
            "round.json": record.to_json(),
        },
    )
    return record


def _counts(y: torch.Tensor, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def _shares(predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(predicted, minlength=len(classes))
    return {c: float(k) / max(len(predicted), 1) for c, k in zip(classes, counts, strict=True)}


def _num(v: float) -> float | str:
    v = float(v)
    return "" if math.isnan(v) else round(v, 6)
