"""Baselines that need no network of their own: random sampling and task-network entropy."""

from __future__ import annotations

import torch

from pal import scoring
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import predict_logits


@register_strategy("random")
class RandomStrategy(Strategy):
    """Uniformly random samples of the unlabeled pool."""

    def choose(self, ctx: QueryContext, n: int) -> Query:
        gen = ctx.generator("random")
        order = torch.randperm(ctx.unlabeled.numel(), generator=gen, device=gen.device)
        return Query(ctx.unlabeled[order[:n]])


@register_strategy("entropy")
class EntropyStrategy(Strategy):
    """The ``n`` samples whose task-network class prediction has the highest entropy."""

    def choose(self, ctx: QueryContext, n: int) -> Query:
        logits = predict_logits(
            ctx.task_model, ctx.x[ctx.unlabeled], ctx.normalize, self.config.eval_batch_size
        )
        scores = scoring.entropy(torch.softmax(logits.float(), dim=1))
        return Query(ctx.unlabeled[scoring.top_n(scores, n)])
