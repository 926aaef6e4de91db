"""The GPU check: one H100/H200, a few minutes, one table. ``benchmarks/gpu_check.sh`` runs it.

Each step is its own process, so a step that hangs or runs out of time (the wrapper's
``timeout``) costs only its own row::

    python -m benchmarks.gpu_check prepare        --out DIR --dataset PATH [--tiny]
    python -m benchmarks.gpu_check mfu            --out DIR --dataset PATH [--tiny]
    python -m benchmarks.gpu_check scoring_ratio  ...
    python -m benchmarks.gpu_check protocol_round ...
    python -m benchmarks.gpu_check bf16_accuracy  ...
    python -m benchmarks.gpu_check gpu_packing    ...
    python -m benchmarks.gpu_check report         --out DIR

Steps (each writes ``DIR/<step>.json`` with its figures and its table rows):

1. ``mfu``: model FLOP utilisation of task training (VGG-16) and scoring training (ResNet-18)
   at 32x32 in bf16 with channels-last, on the library's own training loop, from the epochs
   after the first (cuDNN's autotuning and the first allocations left out), at each batch size
   of ``MFU_BATCHES``;
2. ``scoring_ratio``: scoring (``S_S + S_C``) against its bare forward passes at each eval batch
   size of ``RATIO_BATCHES``;
3. ``protocol_round``: one round of the paper's CIFAR-10 protocol (``configs/cifar10.yaml``) at
   its pool size, its epochs cut to ``ROUND_EPOCHS``; the whole protocol (every round, 100
   epochs) extrapolated from the per-image rates of its phases;
4. ``bf16_accuracy``: test accuracy of a short task-network run in fp32 and in bf16, same seed;
5. ``gpu_packing``: 4 Ray Tune trials sharing the GPU against one at a time (skipped without a
   CUDA GPU).

``--tiny`` runs the same steps at a tiny size (a CPU, a minute or two). Every size is a name of
:data:`SIZES`, overridden by the environment variable ``GPU_CHECK_<NAME>`` (e.g.
``GPU_CHECK_ROUND_EPOCHS=5``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pal
from benchmarks.phases import (
    BARE_FORWARD,
    bf16_peak,
    run_phases,
    task_loss,
    timed,
    train_flops_per_image,
)
from pal.config import load_yaml
from pal.data import ImageData
from pal.loop import Experiment
from pal.pretext import pretext_for
from pal.strategies.base import QueryContext
from pal.training import resolve_device

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "configs" / "cifar10.yaml"
PROTOCOL_TEST = 10000  # CIFAR-10's test split
STEPS = ("prepare", "mfu", "scoring_ratio", "protocol_round", "bf16_accuracy", "gpu_packing")
TITLES = {
    "prepare": "0. data",
    "mfu": "1. MFU",
    "scoring_ratio": "2. scoring vs bare forward",
    "protocol_round": "3. CIFAR-10 protocol",
    "bf16_accuracy": "4. bf16 vs fp32",
    "gpu_packing": "5. GPU packing",
}

# every step's size: (one H100/H200, --tiny on a CPU)
SIZES: dict[str, tuple[Any, Any]] = {
    # 1. MFU: images per training, epochs (the first is left out), batch sizes, networks
    "MFU_IMAGES": (8192, 16),
    "MFU_EPOCHS": (4, 2),
    "MFU_BATCHES": ("64 256", "8"),
    "MFU_TASK_BACKBONE": ("vgg16", "vgg16"),
    "MFU_SCORING_BACKBONE": ("resnet18", "resnet18"),
    # 2. scoring vs bare forward: pool images, eval batch sizes, best of
    "RATIO_POOL": (10000, 16),
    "RATIO_BATCHES": ("512 2048 8192", "64 256"),
    "RATIO_REPEATS": (3, 1),
    "RATIO_SCORING_BACKBONE": ("resnet18", "resnet18"),
    # 3. one protocol round: epochs of each training; pool (0: the protocol's), networks
    "ROUND_EPOCHS": (4, 2),
    "ROUND_POOL": (0, 200),
    "ROUND_VAL": (0, 20),
    "ROUND_TASK_BACKBONE": ("", "cnn"),  # "": the protocol's
    "ROUND_SCORING_BACKBONE": ("", "cnn"),
    # 4. bf16 vs fp32: labeled images, validation images, epochs, network, batch
    "ACC_IMAGES": (10000, 240),
    "ACC_VAL": (1000, 20),
    "ACC_EPOCHS": (10, 2),
    "ACC_BACKBONE": ("vgg16", "cnn"),
    "ACC_BATCH": (128, 64),
    # 3. and 4.: test images evaluated (0: all; else an even spread over the classes)
    "TEST_IMAGES": (0, 500),
    # 5. GPU packing: per trial, the pool, epochs, rounds and networks
    "PACK_POOL": (2000, 200),
    "PACK_EPOCHS": (5, 1),
    "PACK_ROUNDS": (1, 1),
    "PACK_TRIALS": (4, 4),
    "PACK_TASK_BACKBONE": ("vgg16", "cnn"),
    "PACK_SCORING_BACKBONE": ("resnet18", "cnn"),
}


def size(name: str, tiny: bool) -> Any:
    """``SIZES[name]`` for the mode, or ``GPU_CHECK_<name>`` from the environment."""
    default = SIZES[name][1 if tiny else 0]
    raw = os.environ.get(f"GPU_CHECK_{name}")
    if raw is None:
        return default
    return type(default)(raw)


def sizes_of(tiny: bool) -> dict[str, Any]:
    return {name: size(name, tiny) for name in SIZES}


def ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split()]


@dataclasses.dataclass
class Args:
    out: Path
    dataset: Path
    data_dir: Path
    device: str
    tiny: bool

    def base(self) -> dict[str, Any]:
        """What every step's config shares: the data, absolute (Ray trials run elsewhere)."""
        return {
            "dataset": f"folder:{self.dataset}",
            "data_dir": str(self.data_dir),
            "download": False,
            "device": self.device,
            "seed": 0,
        }


def load(args: Args, tiny: bool) -> ImageData:
    """The dataset from its cache; with ``TEST_IMAGES``, every k-th test image only (the test
    split is sorted by class: this keeps them all)."""
    data = pal.load_dataset(f"folder:{args.dataset}", str(args.data_dir), False, None)
    n = size("TEST_IMAGES", tiny)
    if 0 < n < len(data.x_test):
        keep = torch.arange(0, len(data.x_test), len(data.x_test) // n)[:n]
        ids = data.ids_test
        data = dataclasses.replace(
            data,
            x_test=data.x_test[keep].contiguous(),
            y_test=data.y_test[keep],
            ids_test=[ids[i] for i in keep.tolist()] if ids is not None else None,
        )
    return data


def fast(config: dict) -> dict:
    """bf16 autocast and channels-last, asked for (``auto`` gives them on a GPU only)."""
    return {**config, "precision": "bf16", "memory_format": "channels_last"}


class EpochClock:
    """A progress callback that notes when each epoch of each phase ends (``fit`` syncs the
    device once per epoch before it calls back, so the times are the device's)."""

    def __init__(self):
        self.marks: dict[str, list[float]] = {}

    def __call__(self, phase: str, epoch: int, epochs: int) -> None:
        self.marks.setdefault(phase, []).append(time.perf_counter())

    def steady_epoch(self, phase: str) -> float | None:
        """Seconds per epoch after the first (``None`` with fewer than two epochs)."""
        marks = self.marks.get(phase, [])
        if len(marks) < 2:
            return None
        return (marks[-1] - marks[0]) / (len(marks) - 1)


# ---------------------------------------------------------------------------------- steps
def step_prepare(args: Args) -> dict:
    """Decode the dataset once into the cache every later step reads; the machine."""
    start = time.perf_counter()
    data = pal.load_dataset(f"folder:{args.dataset}", str(args.data_dir), False, None)
    seconds = time.perf_counter() - start
    device = resolve_device(args.device)
    peak = bf16_peak(device)
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "bf16_peak_flops": peak,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    shape = "x".join(str(v) for v in data.x_train.shape[1:])
    return {
        "machine": machine,
        "train_images": len(data.x_train),
        "test_images": len(data.x_test),
        "rows": [
            [
                "CIFAR-10 loaded (decoded once into the cache)",
                f"{seconds:.1f} s",
                f"{len(data.x_train)} train + {len(data.x_test)} test images, {shape}",
            ]
        ],
    }


def step_mfu(args: Args) -> dict:
    """Steady-state training throughput and MFU of the task and the scoring network."""
    s = sizes_of(args.tiny)
    n, epochs = s["MFU_IMAGES"], s["MFU_EPOCHS"]
    data = None
    results, rows = [], []
    for batch in ints(s["MFU_BATCHES"]):
        config = fast(
            {
                **args.base(),
                "pool_size": n,
                "val_size": 0,
                "initial_size": n,
                "rounds": 0,
                "batch_size": batch,
                "epochs_task": epochs,
                "epochs_scoring": epochs,
                "task_backbone": s["MFU_TASK_BACKBONE"],
                "scoring_backbone": s["MFU_SCORING_BACKBONE"],
                "model_selection": "last",
            }
        )
        experiment = Experiment(pal.make_config(config), data)
        data = experiment.data
        for role in ("task", "scoring"):
            r = train_throughput(experiment, role)
            results.append({**r, "batch_size": batch})
            mfu = (
                f"{100 * r['mfu']:.1f}%"
                if r["mfu"] is not None
                else f"n/a: no bf16 peak known for {experiment.device.type}"
            )
            rows.append(
                [
                    f"MFU, {role} training, {r['backbone']}, batch {batch}, {r['precision']}",
                    mfu,
                    f"{r['flop_per_s'] / 1e12:.2f} TFLOP/s, {r['images_per_s']:.0f} images/s "
                    f"({r['gflops_per_image']:.2f} GFLOP per image)",
                ]
            )
    return {"results": results, "rows": rows}


def train_throughput(experiment: Experiment, role: str) -> dict:
    """Train the ``role`` network (``task`` or ``scoring``) on the initial pool through the
    library's own code and count its steady epochs."""
    cfg, dev, norm = experiment.config, experiment.device, experiment.normalize
    x, labels = experiment.x_train, experiment.task.labels
    labeled = torch.as_tensor(experiment.pool.labeled, device=dev)
    batch = labeled[: cfg.batch_size]
    clock = EpochClock()
    no_val = np.empty(0, dtype=np.int64)
    with experiment.runtime.autocast():
        if role == "task":
            (model, _), seconds = timed(
                lambda: experiment.task.train(
                    x, labeled.cpu().numpy(), no_val, 0, norm, experiment.augment_mode, clock
                ),
                dev,
            )
            flops = train_flops_per_image(
                model, lambda: task_loss(model(norm(x[batch])), labels[batch]), batch.numel()
            )
            backbone = cfg.task_backbone
        else:
            ctx = QueryContext(
                config=cfg,
                x=x,
                labels=labels,
                labeled=labeled,
                unlabeled=labeled[:0],
                num_classes=experiment.num_classes,
                task_model=None,
                normalize=norm,
                augment_mode=experiment.augment_mode,
                seed=cfg.seed,
                progress=clock,
                task=experiment.task.kind,
                val=None,
            )
            pretext = pretext_for(ctx.task)
            model = pretext.build(ctx)
            _, seconds = timed(lambda: pretext.train(model, ctx), dev)
            loss = pretext.training_loss(model, ctx, ctx.generator("flops"))
            positions = torch.arange(batch.numel(), device=dev)
            flops = train_flops_per_image(model, lambda: loss(positions), batch.numel())
            backbone = cfg.scoring_backbone
    phase = "task" if role == "task" else "scoring"
    epoch_s = clock.steady_epoch(phase) or seconds / cfg.epochs_task
    images_per_s = labeled.numel() / epoch_s
    peak = bf16_peak(dev)
    return {
        "role": role,
        "backbone": backbone,
        "precision": experiment.runtime.precision,
        "images": int(labeled.numel()),
        "epochs": cfg.epochs_task if role == "task" else cfg.epochs_scoring,
        "seconds": seconds,
        "steady_epoch_seconds": epoch_s,
        "images_per_s": images_per_s,
        "gflops_per_image": flops / 1e9,
        "flop_per_s": flops * images_per_s,
        "mfu": flops * images_per_s / peak if peak else None,
    }


def step_scoring_ratio(args: Args) -> dict:
    """Scoring against its bare forward passes, alternated, best of ``RATIO_REPEATS``, at each
    eval batch size (an untrained network: the cost does not depend on the weights)."""
    s = sizes_of(args.tiny)
    pool, repeats = s["RATIO_POOL"], s["RATIO_REPEATS"]
    config = fast(
        {
            **args.base(),
            "pool_size": pool + 16,
            "val_size": 0,
            "initial_size": 16,
            "rounds": 0,
            "scoring_backbone": s["RATIO_SCORING_BACKBONE"],
        }
    )
    experiment = Experiment(pal.make_config(config))
    dev = experiment.device
    pretext = pretext_for(experiment.task.kind)
    bare = BARE_FORWARD[pretext.name]
    unlabeled = torch.as_tensor(experiment.pool.unlabeled, device=dev)
    ctx = QueryContext(
        config=experiment.config,
        x=experiment.x_train,
        labels=experiment.task.labels,
        labeled=torch.as_tensor(experiment.pool.labeled, device=dev),
        unlabeled=unlabeled,
        num_classes=experiment.num_classes,
        task_model=None,
        normalize=experiment.normalize,
        augment_mode="none",
        seed=0,
        task=experiment.task.kind,
    )
    results, rows = [], []
    with experiment.runtime.autocast():
        net = pretext.build(ctx)
        x = experiment.x_train[unlabeled]
        for batch in ints(s["RATIO_BATCHES"]):
            c = dataclasses.replace(ctx, config=experiment.config.replace(eval_batch_size=batch))
            pretext.score(net, c)  # warm-up: cuDNN's choices for this batch shape
            bare(net, x, c.normalize, batch)
            score_s, bare_s = [], []
            for _ in range(repeats):
                score_s.append(timed(lambda c=c: pretext.score(net, c), dev)[1])
                bare_s.append(timed(lambda b=batch: bare(net, x, ctx.normalize, b), dev)[1])
            ratio = min(bare_s) / min(score_s)
            results.append(
                {
                    "eval_batch_size": batch,
                    "images": int(unlabeled.numel()),
                    "scoring_seconds": min(score_s),
                    "bare_seconds": min(bare_s),
                    "ratio": ratio,
                }
            )
            capped = " (CPU: chunks capped at 64 forward images)" if dev.type == "cpu" else ""
            rows.append(
                [
                    f"scoring vs bare forward, {experiment.config.scoring_backbone}, eval batch "
                    f"{batch}{capped}",
                    f"{100 * ratio:.1f}%",
                    f"{unlabeled.numel() / min(score_s):.0f} images/s scored, "
                    f"{unlabeled.numel() / min(bare_s):.0f} bare (x4 rotations), "
                    f"{experiment.runtime.precision}",
                ]
            )
    return {"results": results, "rows": rows}


def protocol_config(args: Args, s: dict) -> tuple[dict, dict]:
    """``configs/cifar10.yaml`` on the folder dataset, its epochs cut to ``ROUND_EPOCHS``
    (checkpoint selection off: its checks are added back per image), and the protocol."""
    protocol = {**pal.make_config(load_yaml(PROTOCOL)).to_dict()}
    config = {
        **protocol,
        **args.base(),
        "epochs_task": s["ROUND_EPOCHS"],
        "epochs_scoring": s["ROUND_EPOCHS"],
        "model_selection": "last",
    }
    if s["ROUND_POOL"]:
        config.update(pool_size=s["ROUND_POOL"], val_size=s["ROUND_VAL"])
    for key in ("TASK", "SCORING"):
        if s[f"ROUND_{key}_BACKBONE"]:
            config[f"{key.lower()}_backbone"] = s[f"ROUND_{key}_BACKBONE"]
    return fast(config), protocol


def step_protocol_round(args: Args) -> dict:
    """One round of the protocol, phase by phase (:func:`run_phases`), and the whole protocol
    extrapolated from it (:func:`extrapolate`)."""
    s = sizes_of(args.tiny)
    config, protocol = protocol_config(args, s)
    experiment = Experiment(pal.make_config(config), load(args, args.tiny))
    clock = EpochClock()
    experiment.progress = clock
    start = time.perf_counter()
    phases = run_phases(experiment, experiment.initial_size, repeats=2, evaluate=True)
    wall = time.perf_counter() - start
    sizes = {
        "n_train": len(experiment.x_train),
        "n_test": len(experiment.x_test),
        "val": len(experiment.pool.val),
        "labeled": phases["n_labeled"],
        "unlabeled": phases["n_unlabeled"],
    }
    epochs = {p: clock.steady_epoch(p) for p in ("task", "scoring")}
    estimate = extrapolate(phases, epochs, sizes, config, protocol)
    test_note = ""
    if sizes["n_test"] < PROTOCOL_TEST:  # evaluated on fewer: the rate per image is scaled
        test_note = f"; evaluation timed on {sizes['n_test']} test images"
    cfg = experiment.config
    hours = estimate["protocol_seconds"] / 3600
    measured = (
        f"{sizes['labeled']} labeled, {sizes['unlabeled']} unlabeled, {cfg.epochs_task} + "
        f"{cfg.epochs_scoring} epochs, {cfg.task_backbone} / {cfg.scoring_backbone}, "
        f"{experiment.runtime.precision}"
    )
    task_mfu = phases["task_training"].get("mfu")
    rows = [
        [
            "one protocol round as measured (task + scoring training, scoring, sub-queries)",
            f"{phases['round_seconds']:.1f} s",
            measured,
        ],
        [
            f"round 0 at {protocol['epochs_task']} + {protocol['epochs_scoring']} epochs "
            "(extrapolated)",
            f"{estimate['round0_seconds'] / 60:.1f} min",
            f"task epoch {estimate['task_epoch_seconds']:.2f} s, scoring epoch "
            f"{estimate['scoring_epoch_seconds']:.2f} s at {sizes['labeled']} labeled"
            + (f"; task MFU {100 * task_mfu:.1f}% over the whole training" if task_mfu else ""),
        ],
        [
            f"whole protocol: {protocol['rounds'] + 1} trainings + {protocol['rounds']} "
            "queries, one seed (extrapolated)",
            f"{hours:.2f} h",
            f"labeled {estimate['labeled'][0]} to {estimate['labeled'][-1]}, pool "
            f"{estimate['budget']}; x5 seeds: {5 * hours:.1f} h{test_note}",
        ],
    ]
    return {
        "phases": phases,
        "steady_epoch_seconds": epochs,
        "sizes": sizes,
        "estimate": estimate,
        "wall_seconds": wall,
        "rows": rows,
    }


def extrapolate(phases: dict, epochs: dict, sizes: dict, config: dict, protocol: dict) -> dict:
    """The protocol's time from the per-image rates of one measured round.

    Per image and epoch: task and scoring training (their steady epochs, else their whole time
    over the epochs); per image: scoring (4 passes), the task network's evaluation (1 pass). A
    round ``r`` of the protocol (``|D_L| = L_0 + r Q``, ``|D_U|`` the rest of the pool) trains
    the task network, checks it ``val_checks`` times on the validation set, evaluates it on the
    validation and test sets and ``D_L``; all but the last round then query: the scoring
    network's training and checks, its fit on ``D_L`` and the validation set, the scoring of
    ``D_U`` and the sub-queries as measured.
    """
    labeled, unlabeled = sizes["labeled"], sizes["unlabeled"]
    task_epoch = epochs.get("task") or phases["task_training"]["seconds"] / config["epochs_task"]
    scoring_epoch = (
        epochs.get("scoring") or phases["scoring_training"]["seconds"] / config["epochs_scoring"]
    )
    t_task = task_epoch / labeled
    t_scoring = scoring_epoch / labeled
    t_score = phases["scoring"]["seconds"] / max(unlabeled, 1)
    ev = phases["evaluation"]
    t_eval = ev["seconds"] / max(ev["images"], 1)
    subqueries = phases["subquery_finetune"]["seconds"]

    budget = sizes["n_train"] - protocol["val_size"]
    l0 = protocol["initial_size"] or max(1, round(protocol["initial_fraction"] * budget))
    q = protocol["query_size"] or max(1, round(protocol["query_fraction"] * budget))
    v, checks, rounds = protocol["val_size"], protocol["val_checks"], protocol["rounds"]
    selecting = protocol["model_selection"] == "best_val"
    per_round, sizes_l = [], []
    for r in range(rounds + 1):
        n_l = l0 + r * q
        n_u = budget - n_l
        sizes_l.append(n_l)
        seconds = protocol["epochs_task"] * n_l * t_task
        seconds += (checks * v if selecting else 0) * t_eval
        seconds += (v + PROTOCOL_TEST + n_l) * t_eval
        if r < rounds:
            seconds += protocol["epochs_scoring"] * n_l * t_scoring
            seconds += (checks * v if selecting else 0) * t_score
            seconds += (n_l + v + n_u) * t_score + subqueries
        per_round.append(seconds)
    return {
        "task_epoch_seconds": task_epoch,
        "scoring_epoch_seconds": scoring_epoch,
        "per_image": {
            "task_epoch": t_task,
            "scoring_epoch": t_scoring,
            "scoring": t_score,
            "evaluation": t_eval,
        },
        "subquery_seconds": subqueries,
        "budget": budget,
        "labeled": sizes_l,
        "round_seconds": per_round,
        "round0_seconds": per_round[0],
        "protocol_seconds": sum(per_round),
    }


def step_bf16_accuracy(args: Args) -> dict:
    """The task network alone (no query), fp32 then bf16, same seed: test accuracy and time."""
    s = sizes_of(args.tiny)
    config = {
        **args.base(),
        "pool_size": s["ACC_IMAGES"] + s["ACC_VAL"],
        "val_size": s["ACC_VAL"],
        "initial_size": s["ACC_IMAGES"],
        "rounds": 0,
        "strategy": "random",
        "task_backbone": s["ACC_BACKBONE"],
        "epochs_task": s["ACC_EPOCHS"],
        "batch_size": s["ACC_BATCH"],
        "lr_task": 0.01,
    }
    runs, data = {}, load(args, args.tiny)
    for name, precision, memory_format in (
        ("fp32", "fp32", "contiguous"),
        ("bf16", "bf16", "channels_last"),
    ):
        cfg = pal.make_config(config, precision=precision, memory_format=memory_format)
        start = time.perf_counter()
        result = pal.run_experiment(cfg, data=data, tracking=False)
        runs[name] = {
            "test_accuracy": result.rounds[0].test_accuracy,
            "val_accuracy": result.rounds[0].val_accuracy,
            "seconds": time.perf_counter() - start,
            "train_seconds": result.rounds[0].train_seconds,
        }
    delta = runs["bf16"]["test_accuracy"] - runs["fp32"]["test_accuracy"]
    tf32 = torch.backends.cudnn.allow_tf32 and torch.cuda.is_available()
    note = "; fp32 convolutions in TF32" if tf32 else ""
    rows = [
        [
            f"test accuracy bf16 - fp32, {s['ACC_BACKBONE']}, {s['ACC_IMAGES']} images, "
            f"{s['ACC_EPOCHS']} epochs, seed 0",
            f"{100 * delta:+.2f} points",
            f"bf16 {runs['bf16']['test_accuracy']:.4f} ({runs['bf16']['train_seconds']:.1f} s "
            f"training), fp32 {runs['fp32']['test_accuracy']:.4f} "
            f"({runs['fp32']['train_seconds']:.1f} s){note}",
        ]
    ]
    return {"runs": runs, "delta": delta, "rows": rows}


def step_gpu_packing(args: Args) -> dict:
    """:func:`benchmarks.tune_overhead.gpu_packing` on a small CIFAR-10 experiment."""
    from benchmarks.tune_overhead import gpu_packing

    s = sizes_of(args.tiny)
    pool = s["PACK_POOL"]
    base = {
        **args.base(),
        "pool_size": pool,
        "val_size": max(2, pool // 10),
        "initial_fraction": 0.2,
        "query_fraction": 0.1,
        "rounds": s["PACK_ROUNDS"],
        "epochs_task": s["PACK_EPOCHS"],
        "epochs_scoring": s["PACK_EPOCHS"],
        "finetune_epochs": 1,
        "task_backbone": s["PACK_TASK_BACKBONE"],
        "scoring_backbone": s["PACK_SCORING_BACKBONE"],
    }
    result = gpu_packing(base, trials=s["PACK_TRIALS"])
    trials = s["PACK_TRIALS"]
    if "skipped" in result:
        rows = [[f"GPU packing, {trials} trials", f"skipped: {result['skipped']}", ""]]
    else:
        one, packed = result["one_at_a_time"], result["packed"]
        rows = [
            [
                f"GPU packing, {trials} trials at gpus_per_trial={packed['gpus_per_trial']:g} "
                "against one at a time",
                f"{result['speedup']:.2f}x",
                f"{packed['trials_per_hour']:.0f} trials/h packed ({packed['seconds']:.0f} s), "
                f"{one['trials_per_hour']:.0f} one at a time ({one['seconds']:.0f} s)",
            ]
        ]
    return {"result": result, "rows": rows}


# --------------------------------------------------------------------------------- report
def report(out: Path, tiny: bool) -> str:
    """``gpu_check.md`` and ``gpu_check.json`` from the steps' files in ``out``: one row per
    figure, a row saying why for a step that failed, timed out or never ran."""
    steps: dict[str, Any] = {}
    lines_rows = []
    for step in STEPS:
        data = _read(out / f"{step}.json")
        status = _read(out / f"{step}.status") or {}
        steps[step] = {"status": status, **(data or {})}
        took = f"{status['seconds']:.0f} s" if "seconds" in status else "-"
        if data and data.get("rows"):
            for check, result, detail in data["rows"]:
                lines_rows.append(f"| {TITLES[step]} | {check} | {result} | {detail} | {took} |")
        else:
            lines_rows.append(f"| {TITLES[step]} | - | {_why(status, step)} | - | {took} |")
    machine = (steps.get("prepare") or {}).get("machine", {})
    where = machine.get("gpu") or f"{machine.get('cpus', '?')} CPU cores (no GPU)"
    total = sum(s["status"].get("seconds", 0.0) for s in steps.values())
    lines = [
        f"### GPU check{' (tiny)' if tiny else ''}: {where}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; torch {machine.get('torch', '?')}, "
        f"device {machine.get('device', '?')}; {total:.0f} s in all.",
        "",
        "| step | check | result | detail | step time |",
        "| --- | --- | --- | --- | --- |",
        *lines_rows,
    ]
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    summary = {"tiny": tiny, "machine": machine, "total_seconds": total, "steps": steps}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    return text


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _why(status: dict, step: str) -> str:
    rc = status.get("rc")
    if rc is None:
        return "not run (no time left, or the wrapper stopped)"
    if rc in (124, 137):
        return f"failed: timed out after its cap of {status.get('cap', '?')} s (see {step}.log)"
    return f"failed: exit status {rc} (see {step}.log)"


# ----------------------------------------------------------------------------------- main
RUNNERS = {
    "prepare": step_prepare,
    "mfu": step_mfu,
    "scoring_ratio": step_scoring_ratio,
    "protocol_round": step_protocol_round,
    "bf16_accuracy": step_bf16_accuracy,
    "gpu_packing": step_gpu_packing,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("step", choices=[*STEPS, "report", "sizes"])
    parser.add_argument("--out", required=True, help="the folder of the steps' files")
    parser.add_argument("--dataset", help="cifar10-jpeg.tar.gz (or an image-folder tree)")
    parser.add_argument("--data-dir", default=str(REPO / "data"), help="the decode cache's root")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU, a minute or two)")
    a = parser.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.step == "report":
        print(report(out, a.tiny))
        return 0
    if a.step == "sizes":
        print(json.dumps(sizes_of(a.tiny), indent=1))
        return 0
    if not a.dataset or not Path(a.dataset).exists():
        print(f"gpu_check: no dataset at {a.dataset!r}", file=sys.stderr)
        return 2
    args = Args(out, Path(a.dataset).resolve(), Path(a.data_dir).resolve(), a.device, a.tiny)
    result = {"step": a.step, "tiny": a.tiny, "sizes": sizes_of(a.tiny), **RUNNERS[a.step](args)}
    (out / f"{a.step}.json").write_text(json.dumps(result, indent=1, default=str))
    for row in result["rows"]:
        print(" | ".join(str(v) for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
