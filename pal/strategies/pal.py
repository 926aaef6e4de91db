"""PAL: Pretext-based Active Learning (Algorithm 1), as decided in ``PAL-METHOD.md``.

One query, the same for every task; what the task changes is the pretext task
(:func:`pal.pretext.pretext_for`: rotation prediction for classification, SimCLR for
segmentation):

1. build and train a scoring network (pretext head + class head) from scratch on ``D_L``;
2. score the unlabeled pool once: ``S_S`` (Eq. 1 or 2) and ``S_C`` (Eq. 3), with their Pearson
   and Spearman correlation as the query's metrics (Table 1);
3. split the query into ``K`` sub-queries; the first takes the top ``S_S + lambda1 S_C``; before
   each later one a copy of the pretext model (made once per query, or afresh before each
   sub-query with ``finetune_start=restart``) is fine-tuned on everything chosen so far with the
   pretext loss only, ``S_D`` is ``S_S`` under the copy on the still-unchosen samples, and the
   top ``S_S + lambda1 S_C + lambda2 S_D`` (Eq. 4) are taken. ``score_norm`` standardises each
   term over the samples it ranks before the weights apply.

The query's metrics are the Table 1 correlations and the diagnostics of
:func:`pal.scoring.run_subqueries`: the spread of each term, how the score correlates with each,
and ``sd_changed``, how many picks ``S_D`` changed.

``finetune_scope=head`` keeps what the pretext head reads (the body's features) from the one
scoring pass, so each fine-tune and re-score runs on the head alone. ``lambda2 = 0`` (or
``K = 1``) runs no fine-tune at all.
"""

from __future__ import annotations

from pal import scoring
from pal.config import ConfigError
from pal.pretext import pretext_for, pretext_tasks
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy


class _PretextTasks:
    """``PALStrategy.tasks``: every task a registered pretext runs on, read at each access so a
    pretext registered after import counts too."""

    def __get__(self, obj, owner=None) -> tuple[str, ...]:
        return pretext_tasks()


@register_strategy("pal")
class PALStrategy(Strategy):
    """Scoring network + hybrid score + sub-queries with self-supervised fine-tuning (Eq. 1-4),
    on the registered pretext task of the query's task (:mod:`pal.pretext`)."""

    tasks = _PretextTasks()

    @classmethod
    def check_config(
        cls, config, query_size: int, image_hw: tuple[int, int], task: str = "classification"
    ) -> None:
        """The pretext's own checks (rotation: square images); ``subqueries`` must fit in a
        query."""
        pretext_for(task).check_config(config, query_size, image_hw)
        if config.rounds > 0 and config.subqueries > query_size:
            raise ConfigError(
                f"subqueries: must be <= the query size ({query_size}), got {config.subqueries}"
            )

    def choose(self, ctx: QueryContext, n: int) -> Query:
        """PAL's query of ``n`` (Algorithm 1) through the pretext of ``ctx.task``, which reads
        its training settings from ``ctx.config`` (the config this strategy was built with)."""
        cfg = self.config
        pretext = pretext_for(ctx.task)
        net = pretext.build(ctx)
        fitted = pretext.train(net, ctx)
        fit_metrics, fit_keys = pretext.fit_metrics(net, ctx)
        sizes = scoring.subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]
        keep = cfg.finetune_scope == "head" and len(sizes) > 1
        scores = pretext.score(net, ctx, keep)
        metrics = scoring.table1_correlations(scores.s_s, scores.s_c)
        diversity = pretext.finetuner(net, scores, ctx) if len(sizes) > 1 else None
        selection = scoring.run_subqueries(
            scores.s_s, scores.s_c, sizes, cfg.lambda1, cfg.lambda2, diversity, cfg.score_norm
        )
        metrics.update(selection.diagnostics)
        metrics.update(fit_metrics, **{"scoring/epoch": float(fitted.chosen_epoch)})
        return Query(ctx.unlabeled[selection.picked], metrics, fit_keys, selection.pick_scores)
