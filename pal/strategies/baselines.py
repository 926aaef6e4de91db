"""Baselines that need no network of their own: random sampling and task-network entropy
(for segmentation, the entropy of each pixel's prediction averaged over the image)."""

from __future__ import annotations

import torch

from pal import scoring
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import predict_logits, predict_reduced


@register_strategy("random")
class RandomStrategy(Strategy):
    """Uniformly random samples of the unlabeled pool."""

    tasks = ("classification", "segmentation")
    label_free = True
    cpu_bf16 = True

    def choose(self, ctx: QueryContext, n: int) -> Query:
        gen = ctx.generator("random")
        order = torch.randperm(ctx.unlabeled.numel(), generator=gen, device=gen.device)
        return Query(ctx.unlabeled[order[:n]])

    choose_label_free = choose


@register_strategy("entropy")
class EntropyStrategy(Strategy):
    """The ``n`` samples whose task-network class prediction has the highest entropy; for
    segmentation the highest mean pixel entropy."""

    tasks = ("classification", "segmentation")
    cpu_bf16 = True

    def choose(self, ctx: QueryContext, n: int) -> Query:
        x, bs = ctx.x[ctx.unlabeled], self.config.eval_batch_size
        if ctx.task == "segmentation":
            scores = predict_reduced(ctx.task_model, x, ctx.normalize, bs, mean_pixel_entropy)
        else:
            logits = predict_logits(ctx.task_model, x, ctx.normalize, bs)
            scores = scoring.entropy(torch.softmax(logits.float(), dim=1))
        top = scoring.top_n(scores, n)
        return Query(ctx.unlabeled[top], scores={"entropy": scores[top]})


def mean_pixel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``[B]``: the entropy of each pixel's class prediction (``logits [B, K, H, W]``), averaged
    over the image."""
    b, c = logits.shape[:2]
    probs = torch.softmax(logits.float(), dim=1).movedim(1, -1).reshape(-1, c)  # [B*H*W, K]
    return scoring.entropy(probs).view(b, -1).mean(dim=1)
