"""One PAL round broken into phases, timed on the code users run.

Phases: task training, scoring-network training, scoring the pool (``S_S`` and ``S_C``), and the
``K - 1`` sub-query fine-tunes with their re-scores (``S_D``). The last three are the task's
pretext (:func:`pal.pretext.pretext_for`) as ``PALStrategy.choose`` calls it: its ``build``,
``train``, ``score`` and ``finetuner``, so one :func:`run_phases` times classification (rotation
prediction) and segmentation (SimCLR) alike. Beside scoring, the bare forward passes it needs
(:data:`BARE_FORWARD`: the same chunks and network passes, no scores) are timed in the same
run, so their ratio says what the scores cost on top. Training phases also count model FLOPs
per image (``torch.utils.flop_counter``, one batch of the training loss) to give FLOP/s and, on
a GPU with a known bf16 peak, model FLOP utilisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pal import scoring
from pal.loop import Experiment
from pal.models import ScoringNet
from pal.pretext import pretext_for
from pal.pretext.simclr import SegScoringNet
from pal.segmentation import IGNORE
from pal.strategies.base import QueryContext
from pal.training import eval_chunks

# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def run_phases(experiment: Experiment, n_labeled: int, repeats: int = 1) -> dict[str, Any]:
    """Time each phase of one PAL round of ``experiment``'s config on its first ``n_labeled``
    pool samples as ``D_L`` and the rest of the pool as ``D_U``.

    Returns a dict of phases, each ``{"seconds", "images", "images_per_s", ...}``,
    ``scoring_vs_bare_forward`` (the throughput ratio; 1.0 means the scores cost nothing) and
    ``subquery_finetune`` (``steps = 0`` when the config takes no sub-queries: ``lambda2 = 0``
    or ``K = 1``).
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
                x, labeled.cpu().numpy(), val, 0, norm, experiment.augment_mode, None
            ),
            dev,
        )
        flops = train_flops_per_image(
            task, lambda: task_loss(task(norm(x[batch])), labels[batch]), batch.numel()
        )
        out["task_training"] = _phase(seconds, cfg.epochs_task * labeled.numel(), flops, peak)

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
        )
        pretext = pretext_for(ctx.task)

        # scoring-network training: pretext loss + class loss on D_L
        net = pretext.build(ctx)
        _, seconds = timed(lambda: pretext.train(net, ctx), dev)
        loss = pretext.training_loss(net, ctx, ctx.generator("bench-flops"))
        positions = torch.arange(batch.numel(), device=dev)  # the first batch of D_L
        flops = train_flops_per_image(net, lambda: loss(positions), batch.numel())
        out["scoring_training"] = _phase(seconds, cfg.epochs_scoring * labeled.numel(), flops, peak)

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

        # sub-query fine-tunes and re-scores of the still-unchosen pool (finetune_scope), on
        # the top of S_S + lambda1 S_C as the sub-queries so far
        n = experiment.query_size
        sizes = scoring.subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]
        seconds = 0.0
        if len(sizes) > 1:
            scores = pretext.score(net, ctx, keep=cfg.finetune_scope == "head")
            diversity = pretext.finetuner(net, scores, ctx)
            order = torch.argsort(scores.s_s + cfg.lambda1 * scores.s_c, descending=True)
            done = 0
            for size in sizes[:-1]:
                done += size
                picked, remaining = order[:done], order[done:]
                _, s = timed(lambda p=picked, r=remaining: diversity(p, r), dev)
                seconds += s
        out["subquery_finetune"] = {
            "seconds": seconds,
            "steps": len(sizes) - 1,
            "scope": cfg.finetune_scope,
        }
    out["round_seconds"] = sum(
        out[k]["seconds"]
        for k in ("task_training", "scoring_training", "scoring", "subquery_finetune")
    )
    return out


# ------------------------------------------------------------------ the bare references
@torch.inference_mode()
def bare_rotation_forward(net: ScoringNet, x: torch.Tensor, normalize, batch_size: int) -> None:
    """What rotation scoring runs, without the scores: 4 rotations, body, both heads."""
    net.eval()
    for chunk in eval_chunks(x, batch_size, passes=4):  # the same chunks as rotation.score_pool
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
    for chunk in eval_chunks(x, batch_size, passes=3):  # the same chunks as simclr.score_pool
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


def _phase(seconds: float, images: int, flops_per_image: float | None = None, peak=None) -> dict:
    out = {"seconds": seconds, "images": int(images), "images_per_s": images / seconds}
    if flops_per_image is not None:
        out["flops_per_image"] = flops_per_image
        out["flop_per_s"] = flops_per_image * images / seconds
        out["mfu"] = out["flop_per_s"] / peak if peak else None
    return out
