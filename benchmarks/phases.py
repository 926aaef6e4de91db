"""One PAL round broken into phases, timed on the code users run.

Phases: task training, scoring-network training, scoring the pool (``S_S`` and ``S_C``), and the
``K - 1`` sub-query fine-tunes with their re-scores of the still-unchosen pool (``S_D``), timed
apart (:func:`time_subqueries`). The last three are the task's pretext
(:func:`pal.pretext.pretext_for`) as ``PALStrategy.choose`` calls it: its ``build``, ``train``,
``score`` and ``finetuner``, so one :func:`run_phases` times classification (rotation
prediction) and segmentation (SimCLR) alike. Beside scoring, the bare forward passes it needs
(:data:`BARE_FORWARD`: the same chunks and network passes, no scores) are timed in the same
run, so their ratio says what the scores cost on top. Training phases also count model FLOPs
per image (``torch.utils.flop_counter``, one batch of the training loss) to give FLOP/s and, on
a GPU with a known bf16 peak, model FLOP utilisation.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import floor
from benchmarks.floor import sync
from pal import scoring
from pal.loop import Experiment
from pal.models import ScoringNet
from pal.pretext import pretext_for
from pal.pretext.base import Pretext
from pal.pretext.simclr import SegScoringNet
from pal.segmentation import IGNORE
from pal.strategies.base import QueryContext
from pal.training import FitSpec, eval_chunks

# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def timed(fn, device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def train_flops_per_image(
    model: torch.nn.Module, batch_loss: Callable[[], torch.Tensor], batch_size: int
) -> float:
    """Model FLOPs of one forward and backward pass of ``batch_loss()`` (a training loss of
    ``batch_size`` images through ``model``) per image."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        batch_loss().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def task_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The task network's training loss: cross-entropy of ``logits [B, K]`` and labels ``[B]``
    (classification) or of ``[B, K, H, W]`` and masks ``[B, H, W]`` (segmentation, 255 left
    out)."""
    return F.cross_entropy(logits.float(), targets.long(), ignore_index=IGNORE)


def run_phases(
    experiment: Experiment, n_labeled: int, repeats: int = 1, evaluate: bool = False
) -> dict[str, Any]:
    """Time each phase of one PAL round of ``experiment``'s config on its first ``n_labeled``
    pool samples as ``D_L`` and the rest of the pool as ``D_U``.

    Returns a dict of phases, each ``{"seconds", "images", "images_per_s", ...}``,
    ``scoring_vs_bare_forward`` (the throughput ratio; 1.0 means the scores cost nothing) and
    ``subquery_finetune`` (``steps = 0`` when the config takes no sub-queries: ``lambda2 = 0``
    or ``K = 1``) with, when there are sub-queries, the phases ``finetunes`` and ``rescoring``
    (see :func:`time_subqueries`). ``round_seconds`` is the whole round: task training, scoring
    training, scoring and the sub-queries. ``evaluate``: also time the task network's
    evaluation on the validation and test sets (``evaluation``, not part of the round).
    ``experiment.progress`` sees every epoch of the two trainings, as in a real round.
    """
    cfg, dev = experiment.config, experiment.device
    pool = torch.as_tensor(experiment.pool.unlabeled, device=dev)
    labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
    x, labels, norm = experiment.x_train, experiment.task.labels, experiment.normalize
    out: dict[str, Any] = {"n_labeled": int(labeled.numel()), "n_unlabeled": int(unlabeled.numel())}
    peak = bf16_peak(dev)
    batch = labeled[: cfg.batch_size]

    with experiment.runtime.autocast():
        # task training: the task network from scratch on D_L
        val = experiment.pool.val
        (task, _), seconds = timed(
            lambda: experiment.task.train(
                x, labeled.cpu().numpy(), val, 0, norm, experiment.augment_mode, experiment.progress
            ),
            dev,
        )
        flops = train_flops_per_image(
            task, lambda: task_loss(task(norm(x[batch])), labels[batch]), batch.numel()
        )
        out["task_training"] = _phase(seconds, cfg.epochs_task * labeled.numel(), flops, peak)
        runtime = experiment.runtime
        x_labeled = norm(x[labeled])  # the floors' inputs, normalised once
        task_spec = dataclasses.replace(FitSpec.from_config(cfg, "task"), compile=False)
        _floor(
            out["task_training"],
            floor.classifier_floor(task, x_labeled, labels[labeled], task_spec, runtime),
        )
        if evaluate:  # what a round does next: the validation and test metrics
            # best of `repeats`, as scoring: the first pass over new shapes builds the kernels
            bs = cfg.eval_batch_size
            val_x, test_x = norm(x[torch.as_tensor(val, device=dev)]), norm(experiment.x_test)
            eval_s, floor_s = [], []
            for _ in range(max(1, repeats)):
                _, seconds = timed(
                    lambda: experiment.task.evaluate(task, x, val, experiment.x_test, norm), dev
                )
                eval_s.append(seconds)
                floor_s.append(
                    floor.forward_floor(task, val_x, bs, runtime)
                    + floor.forward_floor(task, test_x, bs, runtime)
                )
            out["evaluation"] = _phase(min(eval_s), len(val) + len(experiment.x_test))
            _floor(out["evaluation"], min(floor_s))

        # the query's context, as the loop makes it; the pretext as PALStrategy.choose runs it
        ctx = QueryContext(
            config=cfg,
            x=x,
            labels=labels,
            labeled=labeled,
            unlabeled=unlabeled,
            num_classes=len(experiment.classes),
            task_model=task,
            normalize=norm,
            augment_mode=experiment.augment_mode,
            seed=cfg.seed,
            task=experiment.task.kind,
            val=torch.as_tensor(val, device=dev),
            progress=experiment.progress,
        )
        pretext = pretext_for(ctx.task)

        # scoring-network training: pretext loss + class loss on D_L (built inside the timing,
        # as task.train builds the task network)
        def build_and_train() -> torch.nn.Module:
            net = pretext.build(ctx)
            pretext.train(net, ctx)
            return net

        net, seconds = timed(build_and_train, dev)
        loss = pretext.training_loss(net, ctx, ctx.generator("bench-flops"))
        positions = torch.arange(batch.numel(), device=dev)  # the first batch of D_L
        flops = train_flops_per_image(net, lambda: loss(positions), batch.numel())
        out["scoring_training"] = _phase(seconds, cfg.epochs_scoring * labeled.numel(), flops, peak)
        if pretext.name == "rotation":
            spec = dataclasses.replace(FitSpec.from_config(cfg, "scoring"), compile=False)
            _floor(
                out["scoring_training"],
                floor.rotation_floor(net, x_labeled, labels[labeled], spec, runtime),
            )

        # scoring the pool vs the bare forward passes it needs, alternated, best of `repeats`
        bare = BARE_FORWARD.get(pretext.name)
        score_s, bare_s = [], []
        for _ in range(max(1, repeats)):
            _, s = timed(lambda: pretext.score(net, ctx), dev)
            score_s.append(s)
            if bare is not None:
                _, s = timed(lambda: bare(net, x[unlabeled], norm, cfg.eval_batch_size), dev)
                bare_s.append(s)
        out["scoring"] = _phase(min(score_s), unlabeled.numel())
        if bare is not None:
            out["bare_forward"] = _phase(min(bare_s), unlabeled.numel())
            out["scoring_vs_bare_forward"] = min(bare_s) / min(score_s)
            _floor(out["scoring"], min(bare_s))

        # the K - 1 sub-query fine-tunes and re-scores of the still-unchosen pool
        out.update(time_subqueries(pretext, net, ctx, experiment.query_size, runtime))
    out["round_seconds"] = sum(
        out[k]["seconds"]
        for k in ("task_training", "scoring_training", "scoring", "subquery_finetune")
    )
    return out


def time_subqueries(
    pretext: Pretext, net: torch.nn.Module, ctx: QueryContext, n: int, runtime=None
) -> dict:
    """The sub-queries of a query of ``n`` as ``PALStrategy.choose`` runs them
    (:func:`pal.scoring.run_subqueries` on the pretext's ``finetuner``), each of the ``K - 1``
    fine-tune calls split in two: the fine-tune (the copy of the model and its ``fit``) and the
    re-score of the still-unchosen pool (everything after ``fit`` returns).

    Returns ``subquery_finetune`` (``seconds`` of both, ``steps``, ``scope``, ``start``) and,
    when ``steps > 0``, the phases ``finetunes`` (images: epochs x the picked images of each
    step) and ``rescoring`` (images: the remaining pool of each step). When the whole body moves
    (``finetune_scope=all``) and the pretext has a bare reference (:data:`RESCORE_BARE`), the
    bare forward passes of each re-scored pool are timed right after it, with the fine-tuned
    network: ``rescoring_bare_forward`` and ``rescoring_vs_bare_forward``. With ``runtime`` (a
    rotation pretext), each step's fine-tune and re-score also get their floor
    (:mod:`benchmarks.floor`).
    """
    cfg, dev = ctx.config, ctx.device
    sizes = scoring.subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]
    steps: list[dict[str, float]] = []
    if len(sizes) > 1:
        scores = pretext.score(net, ctx, keep=cfg.finetune_scope == "head")
        finetuner = pretext.finetuner(net, scores, ctx)
        bare = RESCORE_BARE.get(pretext.name) if cfg.finetune_scope == "all" else None
        module = sys.modules[type(finetuner).__module__]  # where its `fit` is looked up

        def diversity(picked: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
            real_fit, fitted = module.fit, []

            def timed_fit(*args, **kwargs):
                report = real_fit(*args, **kwargs)
                sync(dev)
                fitted.append(time.perf_counter())
                return report

            sync(dev)
            start = time.perf_counter()
            module.fit = timed_fit
            try:
                s_d = finetuner(picked, remaining)
            finally:
                module.fit = real_fit
            sync(dev)
            end = time.perf_counter()
            fit_end = fitted[-1] if fitted else start
            step = {
                "finetune_seconds": fit_end - start,
                "rescore_seconds": end - fit_end,
                "picked": int(picked.numel()),
                "rescored": int(remaining.numel()),
            }
            if bare is not None:
                rest = ctx.unlabeled[remaining]
                _, step["bare_seconds"] = timed(
                    lambda: bare(finetuner.model, ctx.x[rest], ctx.normalize, cfg.eval_batch_size),
                    dev,
                )
            if runtime is not None and pretext.name == "rotation":
                step.update(_subquery_floor(net, scores, ctx, picked, remaining, step, runtime))
            steps.append(step)
            return s_d

        scoring.run_subqueries(
            scores.s_s, scores.s_c, sizes, cfg.lambda1, cfg.lambda2, diversity, cfg.score_norm
        )
    finetune_s = sum(s["finetune_seconds"] for s in steps)
    rescore_s = sum(s["rescore_seconds"] for s in steps)
    out: dict[str, Any] = {
        "subquery_finetune": {
            "seconds": finetune_s + rescore_s,
            "steps": len(sizes) - 1,
            "scope": cfg.finetune_scope,
            "start": cfg.finetune_start,
            "epochs": cfg.finetune_epochs,
            "finetune_seconds": finetune_s,
            "rescore_seconds": rescore_s,
        }
    }
    if steps:
        rescored = sum(s["rescored"] for s in steps)
        out["finetunes"] = {
            **_phase(finetune_s, cfg.finetune_epochs * sum(s["picked"] for s in steps)),
            "steps": len(steps),
        }
        out["rescoring"] = {**_phase(rescore_s, rescored), "steps": len(steps)}
        if all("finetune_floor" in s for s in steps):
            _floor(out["finetunes"], sum(s["finetune_floor"] for s in steps))
            _floor(out["rescoring"], sum(s["rescore_floor"] for s in steps))
        if all("bare_seconds" in s for s in steps):
            bare_s = sum(s["bare_seconds"] for s in steps)
            out["rescoring_bare_forward"] = _phase(bare_s, rescored)
            out["rescoring_vs_bare_forward"] = bare_s / rescore_s
    return out


def _subquery_floor(net, scores, ctx, picked, remaining, step, runtime) -> dict[str, float]:
    """The floors of one rotation fine-tune on the ``picked`` samples and of the re-score of the
    ``remaining`` ones: the linear head on the cached features (``finetune_scope=head``), or
    the network but its class head on the images (``all``; the re-score's floor is its bare
    forward passes, which ``step`` already timed as ``bare_seconds``)."""
    spec = FitSpec.finetune(ctx.config)
    if scores.features is not None:
        return {
            "finetune_floor": floor.head_floor(
                net.rotation_head, scores.features[picked], spec, runtime
            ),
            "rescore_floor": floor.head_forward_floor(
                net.rotation_head, scores.features[remaining], runtime
            ),
        }
    images = ctx.normalize(ctx.x[ctx.unlabeled[picked]])

    def trained(m):
        return [p for name, p in m.named_parameters() if not name.startswith("class_head")]

    return {
        "finetune_floor": floor.rotation_floor(net, images, None, spec, runtime, trained),
        "rescore_floor": step["bare_seconds"],
    }


def _floor(phase: dict, floor_seconds: float) -> None:
    """Add the phase's floor (:mod:`benchmarks.floor`): its seconds and the floor's share of
    pal's time."""
    phase["floor_seconds"] = floor_seconds
    phase["floor_share"] = floor.share(floor_seconds, phase["seconds"])


# ------------------------------------------------------------------ the bare references
@torch.inference_mode()
def bare_rotation_forward(net: ScoringNet, x: torch.Tensor, normalize, batch_size: int) -> None:
    """What rotation scoring runs, without the scores: 4 rotations, body, both heads."""
    net.eval()
    for chunk in eval_chunks(net, x, batch_size, passes=4):  # the chunks of rotation.score_pool
        b = chunk.shape[0]
        z = net.backbone(scoring.rotations(normalize(chunk)))
        net.rotation_head(z)
        net.class_head(z.view(b, 4, -1)[:, 0])


@torch.inference_mode()
def bare_simclr_forward(net: SegScoringNet, x: torch.Tensor, normalize, batch_size: int) -> None:
    """What SimCLR scoring runs, without the views' sampling and the scores: the encoder on
    three images per image, the class head upsampled to full size, the projection head on
    two."""
    net.eval()
    for chunk in eval_chunks(net.segnet, x, batch_size, passes=3):  # simclr.score_pool's chunks
        b = chunk.shape[0]
        images = normalize(chunk)
        feats, pooled = net.encode(torch.cat([images, images, images]))
        logits = net.segnet.head(feats[:b])
        F.interpolate(logits, chunk.shape[-2:], mode="bilinear", align_corners=False)
        net.projection(pooled[b:])


BareForward = Callable[[torch.nn.Module, torch.Tensor, Any, int], None]
BARE_FORWARD: dict[str, BareForward] = {
    "rotation": bare_rotation_forward,
    "simclr": bare_simclr_forward,
}
"""The reference of each pretext's scoring, by pretext name: ``(net, x uint8 [U, C, H, W],
normalize, eval_batch_size)``, the network passes of its ``score`` and nothing else. A pretext
without one is timed without the ratio."""

RESCORE_BARE: dict[str, BareForward] = {"rotation": bare_rotation_forward}
"""The reference of each pretext's sub-query re-score with the whole network fine-tuned
(``finetune_scope=all``): rotation re-scores with its full scoring pass (``S_S`` and ``S_C``
from the four rotations), so its bare forward is the same as the first scoring's. SimCLR's
re-score skips the class head, which its bare forward runs: no ratio."""


def _phase(seconds: float, images: int, flops_per_image: float | None = None, peak=None) -> dict:
    out = {"seconds": seconds, "images": int(images), "images_per_s": images / seconds}
    if flops_per_image is not None:
        out["flops_per_image"] = flops_per_image
        out["flop_per_s"] = flops_per_image * images / seconds
        out["mfu"] = out["flop_per_s"] / peak if peak else None
    return out
