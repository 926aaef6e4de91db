"""One labeling round: train on everything the ledger holds, choose the next batch, write it.

:func:`next_batch` is the round loop of :mod:`pal.loop` with the user as the oracle: the task
network is trained from scratch on the labeled pool images (as a round of ``pal run`` does, on
the project's config), evaluated on the manifest's ``val`` split, and the project's strategy
chooses ``n`` images among those no batch has offered, nobody labeled and nobody skipped. The
batch is written as ``rounds/NNN/batch.csv`` (path, rank, sub-query, the strategy's scores, the
task network's predicted class and its probability), ``tasks.json`` (Label Studio's import
format, the predictions as pre-annotations) and ``round.json`` (what the round trained on and
measured), in one rename.

With no label at all, the first batch is chosen without labels (:data:`LABEL_FREE`): PAL's
scoring network learns rotations on a seeded sample of the pool (no class loss), and
``coreset``, the default, takes the k-center cover of the pool in that network's features;
``pal`` takes ``S_S`` with its sub-queries (``lambda1`` 0: ``S_C`` needs a class head);
``random`` a seeded draw. On the digits demo, 50 images: coreset covered 9 classes (3-10 images
each), PAL's ``S_S`` 9 but with 38 of the 50 among the 0s, 1s and 8s, the digits that look alike
turned, whose rotation is hardest to tell.
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
from pal.placement import place
from pal.pool import draw_candidates
from pal.rng import derive_seed, numpy_rng
from pal.scoring import k_center_greedy
from pal.strategies import STRATEGIES, QueryContext, build_strategy
from pal.tasks import build_task
from pal.training import (
    Normalizer,
    ProgressFn,
    Runtime,
    predict_logits,
    warn_underfit,
)

LABEL_FREE = ("coreset", "pal", "random")
"""Strategies that choose a first batch with no label at all; the first is the default."""

LABEL_FREE_SAMPLE = 5000
"""At most this many pool images (a seeded sample) train the label-free scoring network."""


@dataclasses.dataclass
class PoolState:
    """The project's pool as the round sees it: the decoded manifest with the ledger's labels.

    Attributes:
        data: the manifest's images with the project's classes; ``y_train`` holds the ledger's
            labels on the pool and the manifest's on ``val``, :data:`UNKNOWN_LABEL` elsewhere.
        index: manifest path -> position in ``data.x_train``.
        pool: ``int64 [P]`` positions of the ``pool`` split.
        val: ``int64 [V]`` positions of the ``val`` split.
        labeled: ``int64 [L]`` labeled pool positions, in ledger order.
        offerable: ``int64 [U]`` pool positions no batch offered, unlabeled and not skipped.
    """

    data: ImageData
    index: dict[str, int]
    pool: np.ndarray
    val: np.ndarray
    labeled: np.ndarray
    offerable: np.ndarray


def load_pool(project: Project, config: Config | None = None) -> PoolState:
    """Decode the manifest (cached after the first time) and lay the ledger over it.

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
    pool = np.flatnonzero(in_pool)
    closed = np.zeros(len(ids), dtype=bool)
    closed[labeled] = True
    closed[[index[p] for p in project.skipped() | project.offered() if p in index]] = True
    offerable = np.flatnonzero(in_pool & ~closed)
    y_test = remap[data.y_test.numpy()] if data.y_test is not None else None
    data = dataclasses.replace(
        data,
        y_train=torch.from_numpy(y),
        y_test=torch.from_numpy(y_test) if y_test is not None else None,
        classes=classes,
    )
    return PoolState(data, index, pool, val, labeled, offerable)


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
) -> dict[str, Any]:
    """Choose and write the next batch of ``n`` images (see the module docstring).

    Args:
        project: an open project (the caller holds its lock).
        n: images in the batch.
        strategy: the strategy instead of the config's (with no label: one of
            :data:`LABEL_FREE`, default ``coreset``).
        force: go on although the last batch is not all labeled.
        progress: per-epoch callback ``(phase, epoch, epochs)``.
        image_url: ``path -> URL`` of an image in Label Studio (default: the manifest path).
        overrides: config keys for this round only (recorded in ``round.json``).

    Returns:
        The round's ``round.json`` as a dict.

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
    state = load_pool(project, cfg)
    timings["load"] = time.perf_counter() - t0
    if not isinstance(n, int) or n < 1:
        raise ProjectError(f"n: the batch size must be an integer >= 1, got {n!r}")
    if n > len(state.offerable):
        raise ProjectError(
            f"n: {n} images asked, but only {len(state.offerable)} pool images are left to offer"
        )
    label_free = len(state.labeled) == 0
    name = strategy or (LABEL_FREE[0] if label_free else cfg.strategy)
    if name not in STRATEGIES:
        raise ProjectError(f"strategy: unknown {name!r}; strategies are {STRATEGIES.names()}")
    if label_free and name not in LABEL_FREE:
        raise ProjectError(
            f"strategy: with no label yet the first batch is chosen by one of {list(LABEL_FREE)}, "
            f"got {name!r}"
        )
    cfg = cfg.replace(strategy=name, label_noise=0.0, missing_classes=())
    hw = tuple(state.data.x_train.shape[-2:])
    STRATEGIES.get(name).check_config(cfg, n, hw, "classification")
    known = set(state.data.y_train[state.labeled].tolist())
    if not label_free and len(known) < 2:
        raise ProjectError(
            f"labels: the labeled images hold {len(known)} class; a task network needs two or "
            "more (label a few images of another class, or start with a label-free batch)"
        )

    runtime = Runtime.from_config(cfg)
    device = runtime.device
    task = build_task(cfg, state.data)
    task.to(device, state.labeled, np.empty(0, dtype=np.int64))
    placement, (x, x_test) = place(
        cfg, device, state.data.x_train, state.data.x_test, pool_size=len(state.offerable)
    )
    normalize = Normalizer(state.data.x_train, runtime.memory_format, rows=state.pool).to(device)
    augment_mode = state.data.default_augment if cfg.augment == "auto" else cfg.augment
    info: dict[str, Any] = {
        "round": r,
        "strategy": name,
        "label_free": label_free,
        "n": n,
        "n_labeled": int(len(state.labeled)),
        "n_offerable": int(len(state.offerable)),
        "placement": placement.describe(),
        "labeled_class_counts": _counts(state.data.y_train[state.labeled], project.classes),
    }
    model = None
    ray_before = last_ray_run()
    with runtime.autocast():
        if not label_free:
            t = time.perf_counter()
            model, fitted = task.train(
                x, state.labeled, state.val, r, normalize, augment_mode, progress
            )
            timings["train"] = time.perf_counter() - t
            t = time.perf_counter()
            train_accuracy = fitted.train_metric  # measured by epochs_task_max's fit check
            if train_accuracy is None:
                train_accuracy = task.score(model, x, state.labeled, normalize)
            info["train_accuracy"] = train_accuracy
            info["val_accuracy"] = task.score(model, x, state.val, normalize)
            info["task_epoch"] = fitted.report.chosen_epoch
            info["task_epochs"] = fitted.epochs
            info["task_fit_attempts"] = fitted.attempts
            if len(state.data.x_test):
                info["test_accuracy"] = task.evaluate(
                    model, x, np.empty(0, np.int64), x_test, normalize
                )[1]
            timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        candidates = draw_candidates(state.offerable, cfg.candidate_pool, cfg.seed, r)
        ctx = QueryContext(
            config=cfg,
            x=x,
            labels=task.labels,
            labeled=torch.as_tensor(state.labeled, device=device),
            unlabeled=torch.as_tensor(candidates, device=device),
            val=torch.as_tensor(state.val, device=device),
            num_classes=len(project.classes),
            task_model=model,
            normalize=normalize,
            augment_mode=augment_mode,
            seed=derive_seed(cfg.seed, "query", r),
            progress=progress,
        )
        query = label_free_query(ctx, n) if label_free else build_strategy(cfg).query(ctx, n)
        timings["query"] = time.perf_counter() - t
        chosen = query.indices.cpu().numpy()
        predicted = probability = None
        if model is not None:
            t = time.perf_counter()
            probs = torch.softmax(
                predict_logits(model, x[ctx.unlabeled], normalize, cfg.eval_batch_size).float(), 1
            )
            confidence, label = probs.max(1)
            info["mean_confidence"] = float(confidence.mean())  # over the images the query scored
            where = torch.searchsorted(ctx.unlabeled, query.indices)  # offerable is sorted
            predicted, probability = label[where].cpu().numpy(), confidence[where].cpu().numpy()
            timings["predict"] = time.perf_counter() - t
    ray_run = last_ray_run()
    if ray_run is not None and ray_run is not ray_before:
        info["ray_scoring"] = dataclasses.asdict(ray_run)
    info["query_metrics"] = {k: float(v) for k, v in query.metrics.items()}
    fits = [("train_accuracy", info.get("train_accuracy", math.nan))]
    fits += [(k, info["query_metrics"].get(k, math.nan)) for k in query.fit_keys]
    info["underfit"] = [k for k, v in fits if warn_underfit(k, v, task.fit_threshold, r)]
    info["predicted_class_shares"] = (
        _shares(predicted, project.classes) if predicted is not None else {}
    )
    info["seconds"] = {**timings, "total": time.perf_counter() - t0}
    info["config"] = cfg.to_dict()
    info["logged"] = False

    ids = state.data.ids_train
    scores = {k: v.float().cpu().numpy() for k, v in query.scores.items()}
    if label_free:
        scores.pop("s_c", None)  # an untrained class head's: not a score of this batch
    rows = []
    for rank, i in enumerate(chosen):
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
            "round.json": json.dumps(plain(info), indent=2) + "\n",
        },
    )
    return info


def label_free_query(ctx: QueryContext, n: int):
    """A first batch with no label (see the module docstring): ``ctx.labeled`` is empty.

    The scoring network of PAL trains its rotation head on a seeded sample of at most
    :data:`LABEL_FREE_SAMPLE` images of ``ctx.unlabeled`` (their labels unknown: no class loss);
    ``pal`` then runs its query with ``lambda1 = 0``, ``coreset`` takes the k-center cover of
    the pool in the network's features (upright images), ``random`` a seeded draw.
    """
    from pal.pretext import pretext_for
    from pal.strategies.base import Query

    cfg = ctx.config
    if cfg.strategy == "random":
        return build_strategy(cfg).query(ctx, n)
    pool = ctx.unlabeled
    rng = numpy_rng(ctx.seed, "label-free-sample")
    take = min(pool.numel(), LABEL_FREE_SAMPLE)
    sample = pool[torch.as_tensor(np.sort(rng.choice(pool.numel(), take, replace=False)))]
    rotation_ctx = dataclasses.replace(ctx, labeled=sample.to(pool.device))
    if cfg.strategy == "pal":
        pal_cfg = cfg.replace(lambda1=0.0)
        query = build_strategy(pal_cfg).query(dataclasses.replace(rotation_ctx, config=pal_cfg), n)
        return query
    pretext = pretext_for("classification")
    net = pretext.build(rotation_ctx)
    pretext.train(net, rotation_ctx)
    feats = predict_logits(net.backbone, ctx.x[pool], ctx.normalize, cfg.eval_batch_size)
    positions = k_center_greedy(feats, feats.new_empty((0, feats.shape[1])), n)
    return Query(pool[positions.to(pool.device)], {"label_free": 1.0})


def plain(value: Any) -> Any:
    """``value`` with every NaN float as ``None``: strict JSON (``null``) for ``round.json``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _counts(y: torch.Tensor, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def _shares(predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(predicted, minlength=len(classes))
    return {c: float(k) / max(len(predicted), 1) for c, k in zip(classes, counts, strict=True)}


def _num(v: float) -> float | str:
    v = float(v)
    return "" if math.isnan(v) else round(v, 6)
