"""Core-set selection (Sener & Savarese, ICLR 2018): greedy k-center in task-network features.

The query is the set of pool points that, added to the labeled set as centers, greedily shrinks
the covering radius ``max_u min_c ||f(u) - f(c)||`` of the pool the most: each pick is the pool
point farthest from its nearest center (the 2-approximation of the k-center problem).
"""

from __future__ import annotations

from pal.pretext import pretext_for
from pal.scoring import k_center_greedy
from pal.strategies.base import (
    Query,
    QueryContext,
    Strategy,
    label_free_sample,
    register_strategy,
)
from pal.training import predict_features, predict_logits


@register_strategy("coreset")
class CoresetStrategy(Strategy):
    """Greedy k-center over the task network's penultimate features (Sener & Savarese, 2018).

    With no label (:meth:`choose_label_free`), the features are a rotation network's: PAL's
    scoring network trains its rotation head on a seeded sample of the pool
    (:func:`~pal.strategies.base.label_free_sample`) and the k-center cover is taken in its
    backbone's features of the upright images."""

    label_free = True
    cpu_bf16 = True

    def choose(self, ctx: QueryContext, n: int) -> Query:
        batch = self.config.eval_batch_size
        pool = predict_features(ctx.task_model, ctx.x[ctx.unlabeled], ctx.normalize, batch)
        if ctx.labeled.numel():
            labeled = predict_features(ctx.task_model, ctx.x[ctx.labeled], ctx.normalize, batch)
        else:  # nothing labeled yet: no network pass on an empty batch
            labeled = pool.new_empty((0, pool.shape[1]))
        positions = k_center_greedy(pool, labeled, n)
        return Query(ctx.unlabeled[positions.to(ctx.unlabeled.device)])

    def choose_label_free(self, ctx: QueryContext, n: int) -> Query:
        rotation_ctx = label_free_sample(ctx)
        pretext = pretext_for("classification")
        net = pretext.build(rotation_ctx)
        pretext.train(net, rotation_ctx)
        pool = ctx.unlabeled
        feats = predict_logits(
            net.backbone, ctx.x[pool], ctx.normalize, self.config.eval_batch_size
        )
        positions = k_center_greedy(feats, feats.new_empty((0, feats.shape[1])), n)
        return Query(pool[positions.to(pool.device)], {"label_free": 1.0})
