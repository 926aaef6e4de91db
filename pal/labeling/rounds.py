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
(:attr:`pal.strategies.Strategy.label_free`; :data:`FIRST_BATCH` by default): ``typiclust``
clusters the pool's downsampled, standardised pixels into ``n`` groups and takes the most typical
image of each (Hacohen et al., ICML 2022), in seconds; ``random`` is a seeded draw; ``coreset``
and ``pal`` train PAL's rotation network on the pool first (minutes to the better part of an
hour on a CPU) and take the k-center cover of its features, or ``S_S``. Measured over 10 seeds
(``benchmarks/first_batch.py``, ``docs/labeling.md``), typiclust's batches covered every class
and matched the pool's class mix better than random draws on the digits demo and on MNIST, and as
well as random on CIFAR-10.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pal.distributed import last_ray_run
from pal.labeling import studio
from pal.labeling.pool import load_pool, unlabeled_in_batch
from pal.labeling.predict import MODEL_FILE, load_model, model_bytes, model_round, version_of
from pal.labeling.project import Project, ProjectError, csv_text
from pal.learner import Learner
from pal.results import LabelRound
from pal.stopping import cohen_kappa, plateau, stop_set
from pal.strategies import STRATEGIES, build_strategy, label_free_strategies
from pal.tasks import build_task
from pal.training import ProgressFn

FIRST_BATCH = "typiclust"
"""The strategy of a label-free first batch unless ``--strategy`` names another."""


def next_batch(
    project: Project,
    n: int,
    strategy: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    image_url=None,
    overrides: dict[str, Any] | None = None,
    stage: Callable[[str], None] | None = None,
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
        stage: called with each phase's name as it starts (``load``, ``train``, ``query``,
            ``predict``, ``write``): :class:`pal.progress.RoundDisplay`'s.

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
    stage = stage or (lambda name: None)
    stage("load")
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
        stage("train")
        trained = learner.train(labeled, pool.val, r)
        model = trained.model
        timings["train"], timings["evaluate"] = trained.train_seconds, trained.eval_seconds
        record.train_accuracy = trained.train_accuracy
        record.val_accuracy = trained.val_accuracy
        record.test_accuracy = trained.test_accuracy
        record.task_epoch = trained.task_epoch
        record.task_epochs = trained.task_epochs
        record.task_fit_attempts = trained.task_fit_attempts
    stage("query")
    ctx = learner.context(pool, model, r)
    query, timings["query"] = learner.choose(build_strategy(cfg), ctx, n, label_free)
    predicted = probability = None
    if model is not None:
        stage("predict")
        t = time.perf_counter()
        confidence, label = learner.confidence(model, ctx.unlabeled)
        record.mean_confidence = float(confidence.mean())  # over the images the query scored
        where = torch.searchsorted(ctx.unlabeled, query.indices)  # offerable is sorted
        predicted, probability = label[where].cpu().numpy(), confidence[where].cpu().numpy()
        timings["predict"] = time.perf_counter() - t
    curve = [project.round_record(k).val_accuracy for k in rounds] + [record.val_accuracy]
    signal = plateau(curve, len(pool.val))
    record.val_change, record.val_plateau = signal.change, signal.fired
    if model is not None:
        record.kappa = _kappa(project, learner, model, data, pool, cfg.seed)
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

    stage("write")
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
        model_version=version_of(name, r),
    )
    files: dict[str, str | bytes] = {
        "batch.csv": csv_text(fields, rows),
        "tasks.json": json.dumps(tasks, indent=1) + "\n",
        "round.json": record.to_json(),
    }
    if model is not None:  # the model that comes out: pal label predict, pal label serve
        shape = tuple(int(s) for s in data.x_train.shape[1:])
        norm = learner.normalize
        runtime = learner.runtime
        files[MODEL_FILE] = model_bytes(
            model,
            cfg,
            project.classes,
            norm.mean,
            norm.std,
            shape,
            r,
            version_of(name, r),
            runtime.precision,
            runtime.memory_format == torch.channels_last,
        )
    project.write_round(r, files)
    return record


def _kappa(project: Project, learner: Learner, model, data, pool, seed: int) -> float:
    """Cohen's kappa of ``model``'s classes on the stop set against the model the last round
    saved (:mod:`pal.stopping`; NaN when none did)."""
    before = model_round(project)
    if before is None:
        return math.nan
    stop = stop_set(pool.indices, seed)
    _, now = learner.confidence(model, stop)
    last = load_model(project, before)
    if last.classes != project.classes or now is None:
        return math.nan
    then = last.predict(data.x_train[torch.as_tensor(stop)]).argmax(1)
    return cohen_kappa(then.numpy(), now.cpu().numpy(), len(project.classes))


def _counts(y: torch.Tensor, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def _shares(predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(predicted, minlength=len(classes))
    return {c: float(k) / max(len(predicted), 1) for c, k in zip(classes, counts, strict=True)}


def _num(v: float) -> float | str:
    v = float(v)
    return "" if math.isnan(v) else round(v, 6)
