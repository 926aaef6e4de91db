"""Scores as pure functions on tensors: probabilities in, one score per sample out.

Every score here is oriented so that **higher = more novel = chosen first** (the decision on the
paper's Section 3.2 vs Algorithm 1; see ``PAL-METHOD.md``). Strategies turn scores into indices
with :func:`top_n`; nothing in this module trains or selects.
"""

from __future__ import annotations

import math

import torch


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
