"""Scores as pure functions on tensors: probabilities in, one score per sample out.

Every score here is oriented so that **higher = more novel = chosen first** (the decision on the
paper's Section 3.2 vs Algorithm 1; see ``PAL-METHOD.md``). Strategies turn scores into indices
with :func:`top_n`. Nothing here trains a network; the one selection rule that is not a top-n of a
score, the core-set's farthest-first traversal (:func:`k_center_greedy`), is pure too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from pal.config import SCORE_NORMS


def rotations(x: torch.Tensor) -> torch.Tensor:
    """All four rotations of each image, sample-major.

    Args:
        x: ``[B, C, H, W]`` with ``H == W``.

    Returns:
        ``[B*4, C, H, W]`` where row ``4*b + i`` is image ``b`` rotated by ``90*i`` degrees
        (counter-clockwise), so ``.view(B, 4, ...)`` recovers ``[image, rotation]``.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    stacked = torch.stack([torch.rot90(x, i, dims=(-2, -1)) for i in range(4)], dim=1)
    return stacked.flatten(0, 1)


def rotation_labels(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Targets ``[B*4]`` (0, 1, 2, 3, 0, 1, ...) matching :func:`rotations`."""
    return torch.arange(4, device=device).repeat(batch)


def rotation_score(rotation_probs: torch.Tensor) -> torch.Tensor:
    """Self-supervision score ``S_S`` (Eq. 1).

    ``S_S(x) = - sum_i g_phi(rot_90i(x))_i``: the summed probability of the correct rotation,
    negated. In ``[-4, 0]``; ``-4`` = every rotation recognised (like ``D_L``), ``0`` = novel.

    Args:
        rotation_probs: ``[N, 4, 4]``; ``[n, i, j]`` is the probability of rotation ``j`` for
            image ``n`` rotated by ``90*i`` degrees.

    Returns:
        ``[N]``.
    """
    if rotation_probs.ndim != 3 or rotation_probs.shape[1:] != (4, 4):
        raise ValueError(f"rotation_probs must be [N, 4, 4], got {tuple(rotation_probs.shape)}")
    return -torch.diagonal(rotation_probs, dim1=1, dim2=2).sum(dim=1)


def kl_uniform_score(class_log_probs: torch.Tensor) -> torch.Tensor:
    """Classification score ``S_C = -KL(U || h_psi(x))`` (Eq. 3).

    ``-KL(U || p) = -(1/C) sum_c log((1/C) / p_c) = log C + (1/C) sum_c log p_c``, in
    ``(-inf, 0]``; ``0`` for a uniform prediction (the class head is unsure: novel). Unbounded
    below, so a confident class head can outweigh a failing rotation head (Appendix C).

    Args:
        class_log_probs: ``[N, C]`` log-probabilities (``log_softmax`` of the class head, never
            the log of a softmax, which underflows to ``-inf``).

    Returns:
        ``[N]``.
    """
    if class_log_probs.ndim != 2:
        raise ValueError(f"class_log_probs must be [N, C], got {tuple(class_log_probs.shape)}")
    num_classes = class_log_probs.shape[1]
    return math.log(num_classes) + class_log_probs.mean(dim=1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy ``H(p) = -sum_c p_c log p_c`` of ``probs [N, C]`` -> ``[N]``, in nats."""
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, C], got {tuple(probs.shape)}")
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def hybrid_score(
    s_s: torch.Tensor,
    s_c: torch.Tensor,
    lambda1: float,
    s_d: torch.Tensor | None = None,
    lambda2: float = 0.0,
) -> torch.Tensor:
    """``S = S_S + lambda1 * S_C (+ lambda2 * S_D)`` (Eq. 3 and Eq. 4), all ``[N]``.

    A zero weight drops its term entirely, so an infinite ``S_C`` cannot leak in as ``0 * inf``.
    """
    score = s_s.clone()
    if lambda1 != 0.0:
        score = score + lambda1 * s_c
    if s_d is not None and lambda2 != 0.0:
        score = score + lambda2 * s_d
    return score


def top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Positions ``[n]`` of the ``n`` highest scores, highest first; ties keep position order."""
    if n > scores.numel():
        raise ValueError(f"cannot pick {n} of {scores.numel()} scores")
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:n]


def subquery_sizes(n: int, k: int) -> list[int]:
    """Split a query of ``n`` into ``k`` sub-queries of about ``n/k`` (Section 3.3).

    The remainder goes to the first sub-queries, so the sizes sum to exactly ``n``.
    """
    if not 1 <= k <= n:
        raise ValueError(f"subqueries must be in [1, {n}] for a query of {n}, got {k}")
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two ``[N]`` vectors (Table 1); NaN when either is constant."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else float("nan")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two ``[N]`` vectors (Table 1), average ranks for ties."""
    return pearson(_ranks(a), _ranks(b))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks of ``[N]`` values, so tied values share one rank."""
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    upper = torch.cumsum(counts, 0).double()
    average = upper - (counts.double() - 1) / 2
    return average[inverse]


def bald(mc_probs: torch.Tensor) -> torch.Tensor:
    """BALD: mutual information between the prediction and the weights (Houlsby et al. 2011),
    estimated from ``T`` MC-dropout passes as in Gal, Islam & Ghahramani 2017.

    ``I(y; w | x) ~= H(mean_t p_t) - mean_t H(p_t)``, in nats: the entropy of the mean
    prediction less the mean entropy of the single passes. In ``[0, log C]``; ``0`` when all
    passes agree, ``log C`` for confident passes that disagree across all ``C`` classes. Tiny
    negatives from rounding are clamped to ``0``.

    Args:
        mc_probs: ``[N, C, T]`` class probabilities of ``T`` stochastic passes.

    Returns:
        ``[N]``.
    """
    if mc_probs.ndim != 3:
        raise ValueError(f"mc_probs must be [N, C, T], got {tuple(mc_probs.shape)}")
    mean_entropy = -torch.special.xlogy(mc_probs, mc_probs).sum(dim=1).mean(dim=1)
    return (entropy(mc_probs.mean(dim=2)) - mean_entropy).clamp_min(0.0)


def k_center_greedy(
    pool_features: torch.Tensor,
    labeled_features: torch.Tensor,
    n: int,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Greedy k-center: ``n`` pool points, each the farthest from its nearest center so far.

    The centers start as the labeled points; every pick becomes a center. Distances are
    Euclidean and computed on the features' device. The initial nearest-center distances are
    taken over chunks of ``chunk_size`` labeled points (peak memory ``[U, chunk_size]``, never
    ``[U, L]``), and each greedy step updates them with one ``O(U d)`` pass.

    Ties go to the lowest pool position. With no labeled points every pool point is infinitely
    far from any center, so the first pick is position 0.

    Args:
        pool_features: ``[U, d]`` features of the unlabeled pool.
        labeled_features: ``[L, d]`` features of the labeled set (``L`` may be 0).
        n: number of points to choose, ``0 <= n <= U``.
        chunk_size: labeled points per distance block; any value gives the same result.

    Returns:
        ``int64 [n]`` unique positions into ``pool_features``, in the order chosen.
    """
    if pool_features.ndim != 2 or labeled_features.ndim != 2:
        raise ValueError(
            f"features must be [U, d] and [L, d], got {tuple(pool_features.shape)} and "
            f"{tuple(labeled_features.shape)}"
        )
    if labeled_features.shape[0] and labeled_features.shape[1] != pool_features.shape[1]:
        raise ValueError(
            f"feature dims differ: pool {pool_features.shape[1]}, "
            f"labeled {labeled_features.shape[1]}"
        )
    num_pool = pool_features.shape[0]
    if not 0 <= n <= num_pool:
        raise ValueError(f"n must be in [0, {num_pool}] (the pool size), got {n}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    # Half precision is too coarse for distances of large feature vectors.
    dtype = torch.promote_types(pool_features.dtype, torch.float32)
    pool = pool_features.to(dtype)
    labeled = labeled_features.to(device=pool.device, dtype=dtype)

    min_dist = torch.full((num_pool,), float("inf"), dtype=dtype, device=pool.device)
    for chunk in labeled.split(chunk_size) if labeled.shape[0] else ():
        # Direct differences rather than the |a|^2 + |b|^2 - 2ab matmul form: no cancellation,
        # a pair's distance does not depend on its chunk, and it matches the per-step updates.
        dist = torch.cdist(pool, chunk, compute_mode="donot_use_mm_for_euclid_dist")
        torch.minimum(min_dist, dist.amin(dim=1), out=min_dist)

    chosen = torch.empty(n, dtype=torch.int64, device=pool.device)
    for step in range(n):
        # The index stays a device tensor: no host synchronisation per step.
        pick = torch.argmax(min_dist)
        chosen[step] = pick
        center = pool.index_select(0, pick.view(1))  # [1, d]
        torch.minimum(min_dist, torch.linalg.vector_norm(pool - center, dim=1), out=min_dist)
        # Duplicates of a pick also sit at distance 0; -inf keeps the pick itself from being
        # chosen again once every remaining point is at 0.
        min_dist.index_fill_(0, pick.view(1), float("-inf"))
    return chosen


def table1_correlations(s_s: torch.Tensor, s_c: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of ``S_S`` and ``S_C [U]`` on the pool (Table 1), as a
    query's metrics ``ss_sc_pearson`` and ``ss_sc_spearman``."""
    return {"ss_sc_pearson": pearson(s_s, s_c), "ss_sc_spearman": spearman(s_s, s_c)}


def normalize_score(s: torch.Tensor, mode: str) -> torch.Tensor:
    """One term of the hybrid score standardised over the samples it ranks (``score_norm``).

    ``none``: ``s`` as it is (the paper). ``zscore``: ``(s - mean) / std`` (population std; a
    constant ``s`` gives all zeros). ``rank``: average ranks (ties share one) scaled to
    ``[0, 1]``, lowest 0, highest 1. Both keep the order: higher is still more novel.

    Args:
        s: ``[N]`` scores.
        mode: one of :data:`SCORE_NORMS`.

    Returns:
        ``[N]``, floating point.
    """
    if mode not in SCORE_NORMS:
        raise ValueError(f"score_norm must be one of {list(SCORE_NORMS)}, got {mode!r}")
    if mode == "none":
        return s
    dtype = s.dtype if s.is_floating_point() else torch.float32
    if s.numel() == 0:
        return s.to(dtype)
    if mode == "zscore":
        d = s.double()
        std = d.std(correction=0)
        if not std > 0:  # constant (or a single sample): nothing to tell apart
            return torch.zeros_like(d, dtype=dtype)
        return ((d - d.mean()) / std).to(dtype)
    ranks = _ranks(s)  # 1 .. N, averaged over ties
    return ((ranks - 1.0) / max(s.numel() - 1, 1)).to(dtype)


@dataclasses.dataclass
class SubquerySelection:
    """What :func:`run_subqueries` chose and how its score terms weighed in.

    Attributes:
        picked: ``int64 [n]`` positions in the pool, in the order chosen.
        diagnostics: flat ``str -> float`` (see :func:`run_subqueries`), merged into PAL's
            query metrics.
        pick_scores: per pick, aligned with ``picked`` (``[n]`` each): ``s_s``, ``s_c`` (raw),
            ``s_d`` (raw, NaN in the first sub-query), ``score`` (Eq. 4 at its sub-query) and
            ``subquery`` (1-based).
    """

    picked: torch.Tensor
    diagnostics: dict[str, float]
    pick_scores: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


def select_subqueries(
    s_s: torch.Tensor,
    s_c: torch.Tensor,
    sizes: list[int],
    lambda1: float,
    lambda2: float,
    diversity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    score_norm: str = "none",
) -> torch.Tensor:
    """Positions in the pool ``[sum(sizes)]``, sub-query by sub-query (Algorithm 1).

    The first sub-query takes the top ``S_S + lambda1 S_C`` of ``s_s, s_c [U]``; before each
    later one ``diversity(picked, remaining) -> S_D [R]`` fine-tunes on every position picked so
    far and scores the ``remaining`` ones, and the top ``S_S + lambda1 S_C + lambda2 S_D`` (Eq. 4)
    of those are taken. ``score_norm`` standardises each term first (:func:`normalize_score`).
    :func:`run_subqueries` is the same with diagnostics of the terms.
    """
    return run_subqueries(s_s, s_c, sizes, lambda1, lambda2, diversity, score_norm).picked


def run_subqueries(
    s_s: torch.Tensor,
    s_c: torch.Tensor,
    sizes: list[int],
    lambda1: float,
    lambda2: float,
    diversity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    score_norm: str = "none",
) -> SubquerySelection:
    """:func:`select_subqueries`, with diagnostics of how each score term weighed in.

    ``score_norm`` (:func:`normalize_score`) standardises ``S_S`` and ``S_C`` over the whole pool
    ``[U]`` before the first sub-query and each ``S_D`` over the remaining pool at its
    sub-query, before the weights apply. The diagnostics are on the raw terms:

    - ``ss_std``, ``sc_std``: standard deviation of ``S_S`` and ``S_C`` over the pool;
    - ``score_ss_spearman``, ``score_sc_spearman``: Spearman correlation of the first
      sub-query's score (over the whole pool) with ``S_S`` and with ``S_C``;
    - for each sub-query ``k >= 2`` (1-based): ``sd_std/k``, ``sd_ss_spearman/k`` (``S_D`` vs
      ``S_S`` on the remaining pool) and ``score_sd_spearman/k`` (that sub-query's score vs
      ``S_D``); ``sd_ss_spearman``: their mean over the sub-queries, NaNs left out (NaN when all
      are NaN; absent when no ``S_D`` was computed);
    - ``sd_changed``: how many picks are not among the top ``n = sum(sizes)`` of ``S_S +
      lambda1 S_C`` alone, i.e. what the ``lambda2 S_D`` term changed (0 when ``lambda2 = 0`` or
      ``K = 1``). As ``S_D`` starts out as ``S_S``, this counts the extra weight on ``S_S`` too;
    - ``sd_finetune_changed`` (when ``S_D`` was computed): how many picks are not in the query
      the same sub-queries take with ``S_D = S_S`` (a fine-tune that changes nothing), i.e. what
      the fine-tune itself changed.

    They cost a few sorts of ``[U]`` vectors per sub-query.
    """
    if not sizes:
        raise ValueError("sizes must name at least one sub-query")
    norm_ss, norm_sc = normalize_score(s_s, score_norm), normalize_score(s_c, score_norm)
    first_score = hybrid_score(norm_ss, norm_sc, lambda1)  # the first sub-query's, whole pool
    diag = {
        "ss_std": _std(s_s),
        "sc_std": _std(s_c),
        "score_ss_spearman": spearman(first_score, s_s),
        "score_sc_spearman": spearman(first_score, s_c),
    }
    sd_ss: list[float] = []

    def record(k: int, remaining: torch.Tensor, s_d: torch.Tensor, score: torch.Tensor) -> None:
        ranks_sd = _ranks(s_d)
        sd_ss.append(pearson(ranks_sd, _ranks(s_s[remaining])))
        diag[f"sd_std/{k}"] = _std(s_d)
        diag[f"sd_ss_spearman/{k}"] = sd_ss[-1]
        diag[f"score_sd_spearman/{k}"] = pearson(_ranks(score), ranks_sd)

    terms = (first_score, norm_ss, norm_sc, sizes, lambda1, lambda2, score_norm)
    picked, at_pick = _take_subqueries(*terms, diversity, record)
    pick_scores = {"s_s": s_s[picked], "s_c": s_c[picked], **at_pick}
    without_sd = top_n(first_score, picked.numel())
    diag["sd_changed"] = _not_in(picked, without_sd)
    if sd_ss:
        finite = [v for v in sd_ss if not math.isnan(v)]
        diag["sd_ss_spearman"] = sum(finite) / len(finite) if finite else float("nan")
        unmoved, _ = _take_subqueries(*terms, lambda picked, remaining: s_s[remaining])
        diag["sd_finetune_changed"] = _not_in(picked, unmoved)
    return SubquerySelection(picked, diag, pick_scores)


def _take_subqueries(
    first_score: torch.Tensor,
    norm_ss: torch.Tensor,
    norm_sc: torch.Tensor,
    sizes: list[int],
    lambda1: float,
    lambda2: float,
    score_norm: str,
    diversity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    record: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sub-query loop of :func:`run_subqueries` on normalised ``S_S``, ``S_C``; ``record(k,
    remaining, S_D, score)`` sees each sub-query ``k >= 2`` that computed a ``S_D``.

    Returns:
        The picks ``int64 [n]`` (positions in the pool) and, aligned with them, ``score``,
        ``s_d`` (NaN where none was computed) and ``subquery`` ``[n]``.
    """
    chosen = torch.zeros(norm_ss.numel(), dtype=torch.bool, device=norm_ss.device)
    picks: list[torch.Tensor] = []
    at_pick: dict[str, list[torch.Tensor]] = {"score": [], "s_d": [], "subquery": []}
    for k, size in enumerate(sizes, start=1):
        s_d = None
        if k == 1:
            remaining = torch.arange(norm_ss.numel(), device=norm_ss.device)
            score = first_score
        else:
            remaining = (~chosen).nonzero().squeeze(1)
            s_d = diversity(torch.cat(picks), remaining) if diversity is not None else None
            norm_sd = normalize_score(s_d, score_norm) if s_d is not None else None
            score = hybrid_score(norm_ss[remaining], norm_sc[remaining], lambda1, norm_sd, lambda2)
            if s_d is not None and record is not None:
                record(k, remaining, s_d, score)
        top = top_n(score, size)
        pick = remaining[top]
        chosen[pick] = True
        picks.append(pick)
        at_pick["score"].append(score[top].float())
        picked_score = at_pick["score"][-1]
        no_sd = torch.full_like(picked_score, math.nan)
        at_pick["s_d"].append(s_d[top].float() if s_d is not None else no_sd)
        at_pick["subquery"].append(torch.full_like(picked_score, float(k)))
    return torch.cat(picks), {key: torch.cat(v) for key, v in at_pick.items()}


def _not_in(picked: torch.Tensor, other: torch.Tensor) -> float:
    """How many of ``picked`` are not in ``other``, as a float (a query metric)."""
    return float(picked.numel() - int(torch.isin(picked, other).sum()))


def _std(x: torch.Tensor) -> float:
    """Population standard deviation of ``[N]`` values (NaN when empty)."""
    return float(x.double().std(correction=0)) if x.numel() else float("nan")


DOMINANCE_SPEARMAN = 0.95
"""The Spearman correlation of the score with one term at which that term decides the query."""


@dataclasses.dataclass(frozen=True)
class Dominance:
    """One weighted term of the hybrid score that decides a query's ranking on its own.

    Attributes:
        term: ``"S_S"``, ``"S_C"`` or ``"S_D"``.
        spearman: the score's Spearman correlation with ``term`` (over the first sub-query's
            pool; for ``S_D``, the mean over the sub-queries after the first).
        other: the score's Spearman correlation with the term it outweighs.
        advice: which config key would rebalance the score, and which way.
    """

    term: str
    spearman: float
    other: float
    advice: str

    def message(self) -> str:
        """What the console says; the same words every round (the figures are in the query
        metrics), so a warning filter shows it once per run."""
        return (
            f"PAL's query is ranked by {self.term} alone (the score's Spearman correlation with "
            f"it is {DOMINANCE_SPEARMAN} or more, with the term it is weighed against below): "
            f"to weigh the terms more evenly, {self.advice}; the query metrics "
            f"dominant/{self.term} and score_*_spearman hold the figures"
        )


def dominant_terms(
    diagnostics: dict[str, float],
    lambda1: float,
    lambda2: float,
    score_norm: str,
    threshold: float = DOMINANCE_SPEARMAN,
) -> list[Dominance]:
    """The weighted terms that decide the query alone, from :func:`run_subqueries`'
    diagnostics: a term whose Spearman correlation with the score is at least ``threshold``
    while the term it is weighed against stays below it (terms that agree with each other
    decide nothing alone). ``S_S`` against ``S_C`` in the first sub-query (when ``lambda1 !=
    0``); ``S_D`` against ``S_S`` in the later ones (when ``S_D`` was computed and ``lambda2 !=
    0``)."""
    out = []
    norm = "" if score_norm == "rank" else ", or set score_norm: rank to weigh ranks"
    if lambda1 != 0:
        ss = diagnostics.get("score_ss_spearman", math.nan)
        sc = diagnostics.get("score_sc_spearman", math.nan)
        if sc >= threshold > ss:
            advice = f"lower lambda1 (now {lambda1:g}){norm}"
            out.append(Dominance("S_C", sc, ss, advice))
        elif ss >= threshold > sc:
            advice = f"raise lambda1 (now {lambda1:g}){norm}"
            out.append(Dominance("S_S", ss, sc, advice))
    sd_keys = [k for k in diagnostics if k.startswith("score_sd_spearman/")]
    if lambda2 != 0 and sd_keys:
        sd = sum(diagnostics[k] for k in sd_keys) / len(sd_keys)
        sd_ss = diagnostics.get("sd_ss_spearman", math.nan)
        if sd >= threshold > sd_ss:
            advice = f"lower lambda2 (now {lambda2:g}), finetune_lr_factor or finetune_epochs"
            out.append(Dominance("S_D", sd, sd_ss, advice))
    return out
