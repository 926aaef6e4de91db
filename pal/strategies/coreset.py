"""Core-set selection (Sener & Savarese, ICLR 2018): greedy k-center in task-network features.

The query is the set of pool points that, added to the labeled set as centers, greedily shrinks
the covering radius ``max_u min_c ||f(u) - f(c)||`` of the pool the most: each pick is the pool
point farthest from its nearest center (the 2-approximation of the k-center problem).
"""

from __future__ import annotations

from pal.scoring import k_center_greedy
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import predict_features


@register_strategy("coreset")
class CoresetStrategy(Strategy):
    """Greedy k-center over the task network's penultimate features (Sener & Savarese, 2018)."""

    def choose(self, ctx: QueryContext, n: int) -> Query:
        batch = self.config.eval_batch_size
        pool = predict_features(ctx.task_model, ctx.x[ctx.unlabeled], ctx.normalize, batch)
        if ctx.labeled.numel():
            labeled = predict_features(ctx.task_model, ctx.x[ctx.labeled], ctx.normalize, batch)
        else:  # nothing labeled yet: no network pass on an empty batch
            labeled = pool.new_empty((0, pool.shape[1]))
        positions = k_center_greedy(pool, labeled, n)
        return Query(ctx.unlabeled[positions.to(ctx.unlabeled.device)])
