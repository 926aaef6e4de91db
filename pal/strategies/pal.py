"""PAL: Pretext-based Active Learning (Algorithm 1), as decided in ``PAL-METHOD.md``.

One query, the same for every task; what the task changes is the pretext task
(:func:`pal.pretext.pretext_for`: rotation prediction for classification, SimCLR for
segmentation):

1. build and train a scoring network (pretext head + class head) from scratch on ``D_L`` (with
   ``epochs_scoring_warm``, from the second query on: from the last query's scoring network,
   for that many epochs);
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

import dataclasses
import warnings

import torch

from pal import scoring
from pal.config import ConfigError
from pal.pretext import PoolScores, pretext_for, pretext_tasks
from pal.strategies.base import (
    Query,
    QueryContext,
    Strategy,
    label_free_sample,
    register_strategy,
)


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
    label_free = True
    cpu_bf16 = True

    def __init__(self, config):
        super().__init__(config)
        # the last query's scoring network (state dict on the CPU), kept for a warm start
        self._scoring_state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict:
        """The last query's scoring network, with ``epochs_scoring_warm`` set (else nothing)."""
        return {} if self._scoring_state is None else {"scoring_network": self._scoring_state}

    def load_state_dict(self, state: dict) -> None:
        self._scoring_state = state.get("scoring_network")

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
        keep = cfg.finetune_scope == "head" and len(_sizes(cfg, n)) > 1
        warm = ctx.config.epochs_scoring_warm is not None
        scored = score_pool(ctx, keep, self._scoring_state if warm else None)
        if warm:
            self._scoring_state = {
                k: v.detach().to("cpu", copy=True) for k, v in scored.net.state_dict().items()
            }
        selection = select(scored, ctx, n)
        metrics = {**scored.metrics, **selection.diagnostics}
        metrics.update(warn_dominance(selection.diagnostics, cfg))
        return Query(
            ctx.unlabeled[selection.picked], metrics, scored.fit_keys, selection.pick_scores
        )

    def choose_label_free(self, ctx: QueryContext, n: int) -> Query:
        """``S_S`` alone (``lambda1`` 0: ``S_C`` needs a class head trained on labels), the
        rotation head trained on a seeded sample of the pool
        (:func:`~pal.strategies.base.label_free_sample`), with the sub-queries."""
        cfg = self.config.replace(lambda1=0.0)
        rotation_ctx = dataclasses.replace(label_free_sample(ctx), config=cfg)
        return PALStrategy(cfg).choose(rotation_ctx, n)


class DominanceWarning(UserWarning):
    """One term of PAL's hybrid score ranks the query on its own (:func:`warn_dominance`)."""


def warn_dominance(diagnostics: dict[str, float], cfg) -> dict[str, float]:
    """Warn (:class:`DominanceWarning`) for each weighted term that decides the query's
    ranking alone (:func:`pal.scoring.dominant_terms`), naming the key that would rebalance
    it; returns the query metrics ``dominant/<term>``: 1.0 for such a term, 0.0 for the other
    weighted terms."""
    found = scoring.dominant_terms(diagnostics, cfg.lambda1, cfg.lambda2, cfg.score_norm)
    weighted = ["S_S"] + ["S_C"] * (cfg.lambda1 != 0)
    weighted += ["S_D"] * (cfg.lambda2 != 0 and "sd_ss_spearman" in diagnostics)
    flags = {f"dominant/{term}": 0.0 for term in weighted} if len(weighted) > 1 else {}
    for dominance in found:
        flags[f"dominant/{dominance.term}"] = 1.0
        warnings.warn(dominance.message(), DominanceWarning, stacklevel=3)
    return flags


def _sizes(cfg, n: int) -> list[int]:
    """The sub-query sizes of a query of ``n``: ``[n]`` when ``S_D`` is unused."""
    return scoring.subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]


@dataclasses.dataclass
class ScoredPool:
    """PAL's scoring network trained on ``D_L`` and its scores of the pool (Algorithm 1's first
    loop and Eq. 1, 3): what every selection of one query starts from.

    Attributes:
        net: the trained scoring network.
        scores: ``S_S``, ``S_C`` ``[U]`` (and the head's features when kept).
        metrics: the Table 1 correlations, the network's fit and its chosen epoch.
        fit_keys: the metrics held to ``fit_threshold``.
    """

    net: torch.nn.Module
    scores: PoolScores
    metrics: dict[str, float]
    fit_keys: tuple[str, ...]


def score_pool(
    ctx: QueryContext, keep: bool, start: dict[str, torch.Tensor] | None = None
) -> ScoredPool:
    """Train the scoring network of ``ctx.task``'s pretext on ``D_L`` and score ``ctx.unlabeled``
    (with ``keep``, also the features a head-only fine-tune reads).

    ``start``: a warm start, the state dict of an earlier scoring network of the same shape,
    trained on for ``epochs_scoring_warm`` epochs instead of ``epochs_scoring`` from the init
    (same rate, schedule, selection and fit threshold)."""
    pretext = pretext_for(ctx.task)
    net = pretext.build(ctx)
    train_ctx = ctx
    if start is not None:
        net.load_state_dict(start)
        epochs = ctx.config.epochs_scoring_warm or ctx.config.epochs_scoring
        train_ctx = dataclasses.replace(ctx, config=ctx.config.replace(epochs_scoring=epochs))
    fitted = pretext.train(net, train_ctx)
    fit_metrics, fit_keys = pretext.fit_metrics(net, ctx)
    scores = pretext.score(net, ctx, keep)
    metrics = scoring.table1_correlations(scores.s_s, scores.s_c)
    metrics.update(fit_metrics, **{"scoring/epoch": float(fitted.chosen_epoch)})
    if ctx.config.epochs_scoring_warm is not None:
        metrics["scoring/warm_start"] = float(start is not None)
    return ScoredPool(net, scores, metrics, tuple(fit_keys))


def select(scored: ScoredPool, ctx: QueryContext, n: int) -> scoring.SubquerySelection:
    """The ``K`` sub-queries of ``n`` on a scored pool under ``ctx.config``'s ``lambda1``,
    ``lambda2``, ``score_norm`` and fine-tune (Eq. 4). Nothing here changes ``scored``, so one
    scored pool serves selections under several settings (the terms study,
    ``benchmarks/missing_share.py``)."""
    cfg = ctx.config
    sizes = _sizes(cfg, n)
    diversity = None
    if len(sizes) > 1:
        diversity = pretext_for(ctx.task).finetuner(scored.net, scored.scores, ctx)
    s_s, s_c = scored.scores.s_s, scored.scores.s_c
    return scoring.run_subqueries(
        s_s, s_c, sizes, cfg.lambda1, cfg.lambda2, diversity, cfg.score_norm
    )
