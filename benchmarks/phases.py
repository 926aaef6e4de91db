"""One PAL round broken into phases, timed on the library's own code paths.

Phases: task training, scoring-network training, scoring the pool (``S_S`` and ``S_C``), and the
``K - 1`` sub-query fine-tunes with their re-scores (``S_D``). Beside scoring, the bare forward
passes it needs (the four rotations of each image in one batched pass through the body and both
heads, no scores) are timed in the same run, so their ratio says what the scores cost on top.
Training phases also count model FLOPs per image (``torch.utils.flop_counter``) to give FLOP/s
and, on a GPU with a known bf16 peak, model FLOP utilisation.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pal import scoring
from pal.loop import Experiment
from pal.models import ScoringNet, build_backbone
from pal.rng import seeded_init
from pal.strategies.base import QueryContext
from pal.strategies.pal import _Finetuner, score_pool, train_scoring_net
from pal.training import FitSpec, eval_chunks

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


def train_flops_per_image(model: torch.nn.Module, x: torch.Tensor, loss_of) -> float:
    """Model FLOPs of one forward and backward pass per image of the batch ``x``."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss_of(model, x).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def run_phases(experiment: Experiment, n_labeled: int, repeats: int = 1) -> dict[str, Any]:
    """Time each phase of one PAL round of ``experiment``'s config on its first ``n_labeled``
    pool samples as ``D_L`` and the rest of the pool as ``D_U``.

    Returns a dict of phases, each ``{"seconds", "images", "images_per_s", ...}``, and
    ``scoring_vs_bare_forward`` (the throughput ratio; 1.0 means the scores cost nothing).
    """
    cfg, dev = experiment.config, experiment.device
    pool = torch.as_tensor(experiment.unlabeled_indices(), device=dev)
    labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
    x, labels = experiment.x_train, experiment.task.labels
    out: dict[str, Any] = {"n_labeled": int(labeled.numel()), "n_unlabeled": int(unlabeled.numel())}
    peak = bf16_peak(dev)

    with experiment.autocast():
        # task training: the task network from scratch on D_L
        task, seconds = timed(
            lambda: experiment.task.train(
                x, labeled.cpu().numpy(), 0, experiment.normalize, experiment.augment_mode, None
            ),
            dev,
        )
        images = cfg.epochs_task * labeled.numel()
        flops = train_flops_per_image(
            task,
            experiment.normalize(x[labeled[: cfg.batch_size]]),
            lambda m, b: F.cross_entropy(m(b), labels[labeled[: b.shape[0]]]),
        )
        out["task_training"] = _phase(seconds, images, flops, peak)

        # scoring-network training: four rotations per image, rotation + class loss
        channels, h, w = x.shape[1:]
        with seeded_init(cfg.seed, "bench-scoring"):
            net = ScoringNet(
                build_backbone(cfg.scoring_backbone, channels, (h, w)), len(experiment.classes)
            )
        net.to(dev, memory_format=experiment.normalize.memory_format)
        spec = FitSpec.from_config(cfg, "scoring")
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        _, seconds = timed(
            lambda: train_scoring_net(
                net,
                x[labeled],
                labels[labeled],
                experiment.normalize,
                spec,
                experiment.augment_mode,
                gen,
            ),
            dev,
        )

        def scoring_loss(m, b):
            rot, cls = m(scoring.rotations(b))
            n = b.shape[0]
            return F.cross_entropy(rot, scoring.rotation_labels(n, dev)) + F.cross_entropy(
                cls.view(n, 4, -1)[:, 0], labels[labeled[:n]]
            )

        flops = train_flops_per_image(
            net, experiment.normalize(x[labeled[: cfg.batch_size]]), scoring_loss
        )
        out["scoring_training"] = _phase(seconds, cfg.epochs_scoring * labeled.numel(), flops, peak)

        # scoring the pool vs the bare forward passes it needs, alternated, best of `repeats`
        bs = cfg.eval_batch_size
        score_s, bare_s = [], []
        for _ in range(max(1, repeats)):
            scores, s = timed(lambda: score_pool(net, x[unlabeled], experiment.normalize, bs), dev)
            score_s.append(s)
            _, s = timed(lambda: bare_forward(net, x[unlabeled], experiment.normalize, bs), dev)
            bare_s.append(s)
        n_pool = unlabeled.numel()
        out["scoring"] = _phase(min(score_s), n_pool)
        out["bare_forward"] = _phase(min(bare_s), n_pool)
        out["scoring_vs_bare_forward"] = min(bare_s) / min(score_s)

        # sub-query fine-tunes and re-scores of the still-unchosen pool (finetune_scope)
        sizes = scoring.subquery_sizes(experiment.query_size, cfg.subqueries)
        keep = cfg.finetune_scope == "head"
        if keep:
            scores = score_pool(net, x[unlabeled], experiment.normalize, bs, keep_features=True)
        ctx = QueryContext(
            config=cfg,
            x=x,
            labels=labels,
            labeled=labeled,
            unlabeled=unlabeled,
            num_classes=len(experiment.classes),
            task_model=task,
            normalize=experiment.normalize,
            augment_mode=experiment.augment_mode,
            seed=cfg.seed,
        )
        finetuner = _Finetuner(net, scores.features if keep else None, ctx, cfg)
        order = torch.argsort(scores.s_s + cfg.lambda1 * scores.s_c, descending=True)
        seconds, done = 0.0, 0
        for size in sizes[:-1]:
            done += size
            picked, remaining = order[:done], order[done:]
            _, s = timed(lambda p=picked, r=remaining: finetuner.diversity_score(p, r), dev)
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


@torch.inference_mode()
def bare_forward(net: ScoringNet, x: torch.Tensor, normalize, batch_size: int) -> None:
    """The forward passes scoring needs and nothing else: 4 rotations, body, both heads."""
    net.eval()
    for chunk in eval_chunks(x, batch_size, passes=4):  # the same chunks as score_pool
        b = chunk.shape[0]
        z = net.backbone(scoring.rotations(normalize(chunk)))
        net.rotation_head(z)
        net.class_head(z.view(b, 4, -1)[:, 0])


def _phase(seconds: float, images: int, flops_per_image: float | None = None, peak=None) -> dict:
    out = {"seconds": seconds, "images": int(images), "images_per_s": images / seconds}
    if flops_per_image is not None:
        out["flops_per_image"] = flops_per_image
        out["flop_per_s"] = flops_per_image * images / seconds
        out["mfu"] = out["flop_per_s"] / peak if peak else None
    return out
