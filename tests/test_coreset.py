"""Core-set (greedy k-center): the traversal on hand-made points, chunking, and the strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pal
from pal.scoring import k_center_greedy
from pal.strategies import build_strategy
from tests.helpers import make_context


def line(*values: float) -> torch.Tensor:
    """Points on a line as ``[N, 1]`` features."""
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def test_points_on_a_line_follow_the_farthest_first_traversal():
    # labeled {0}; pool 1, 2, 5, 9, 10 (positions 0..4). Nearest-center distances 1, 2, 5, 9, 10:
    # take 10 (pos 4) -> 1, 2, 5, 1, 0 -> take 5 (pos 2) -> 1, 2, 0, 1 -> take 2 (pos 1)
    # -> 1, 0, 0, 1: tie between 1 (pos 0) and 9 (pos 3), the lowest position wins -> then 9.
    chosen = k_center_greedy(line(1, 2, 5, 9, 10), line(0), 5)
    assert chosen.tolist() == [4, 2, 1, 0, 3]
    assert chosen.dtype == torch.int64


def test_two_dimensional_points():
    labeled = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pool = torch.tensor([[5.0, 1.0], [0.0, 8.0], [10.0, 7.0], [5.0, 9.0], [1.0, 1.0]])
    # nearest-labeled distances: sqrt(26), 8, 7, sqrt(106), sqrt(2) -> take (5, 9), position 3.
    # (0, 8) drops to |(-5, -1)| = sqrt(26), (10, 7) to |(5, -2)| = sqrt(29) -> take position 2.
    # (5, 1) and (0, 8) now tie at sqrt(26): position 0 first, then 1, then (1, 1) last.
    chosen = k_center_greedy(pool, labeled, 5)
    assert chosen.tolist() == [3, 2, 0, 1, 4]


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunked_distances_give_the_same_picks(chunk_size):
    gen = torch.Generator().manual_seed(0)
    pool, labeled = torch.randn(40, 3, generator=gen), torch.randn(7, 3, generator=gen)
    expected = k_center_greedy(pool, labeled, 25)
    assert torch.equal(k_center_greedy(pool, labeled, 25, chunk_size=chunk_size), expected)
    assert torch.equal(
        k_center_greedy(line(1, 2, 5, 9, 10), line(0, 3), 5, chunk_size),
        k_center_greedy(line(1, 2, 5, 9, 10), line(0, 3), 5),
    )


def test_no_labeled_points_starts_at_position_zero():
    chosen = k_center_greedy(line(3, 0, 7, 4), torch.empty(0, 1), 4)
    # first pick position 0 (value 3) -> distances 0, 3, 4, 1 -> 7, then 0, then 4
    assert chosen.tolist() == [0, 2, 1, 3]


def test_duplicates_are_never_chosen_twice():
    chosen = k_center_greedy(torch.zeros(4, 2), torch.zeros(1, 2), 4)
    assert chosen.tolist() == [0, 1, 2, 3]


def test_invalid_requests_raise():
    with pytest.raises(ValueError, match=r"n must be in \[0, 3\]"):
        k_center_greedy(line(1, 2, 3), line(0), 4)
    with pytest.raises(ValueError, match="feature dims differ"):
        k_center_greedy(torch.zeros(3, 2), torch.zeros(1, 3), 1)
    assert k_center_greedy(line(1, 2, 3), line(0), 0).tolist() == []


def brute_force_k_center(pool: np.ndarray, labeled: np.ndarray, n: int) -> list[int]:
    """Reference: at every step, every pool point's distance to every center, from scratch.

    Squared distances by ``|a|^2 + |b|^2 - 2 a.b`` in float64 (a ``[U, L, d]`` difference tensor
    would take gigabytes); ``|a|^2`` is added after the minimum over centers, which it does not
    change, and the argmax needs no square root.
    """
    sq_pool = (pool**2).sum(1)
    chosen: list[int] = []
    for _ in range(n):
        centers = np.concatenate([labeled, pool[chosen]])
        dist = ((centers**2).sum(1)[None] - 2.0 * pool @ centers.T).min(1) + sq_pool
        dist[chosen] = -np.inf
        chosen.append(int(np.argmax(dist)))
    return chosen


def test_large_random_case_matches_brute_force():
    rng = np.random.default_rng(0)
    pool, labeled = rng.normal(size=(5000, 32)), rng.normal(size=(3000, 32))
    chosen = k_center_greedy(torch.from_numpy(pool), torch.from_numpy(labeled), 20, chunk_size=512)
    assert chosen.tolist() == brute_force_k_center(pool, labeled, 20)


class PixelFeatures(nn.Module):
    """A task model whose penultimate features are the (normalised) pixels themselves."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def test_strategy_picks_the_point_far_from_every_labeled_one(digits):
    """An all-white image appended to the pool is farther from every digit than any digit."""
    white = torch.full((1, *digits.x_train.shape[1:]), 255, dtype=torch.uint8)
    data = pal.ImageData(
        name="digits+white",
        x_train=torch.cat([digits.x_train, white]),
        y_train=torch.cat([digits.y_train, torch.zeros(1, dtype=torch.int64)]),
        x_test=digits.x_test,
        y_test=digits.y_test,
        classes=digits.classes,
        default_augment="crop",
    )
    outlier = len(digits.x_train)
    config = pal.Config(strategy="coreset", device="cpu")
    ctx = make_context(data, config, range(100), [*range(100, 300), outlier])
    ctx.task_model = PixelFeatures()
    chosen = build_strategy(config).query(ctx, 10).indices.tolist()
    assert chosen[0] == outlier
    assert len(set(chosen)) == 10 and set(chosen) <= set(ctx.unlabeled.tolist())


def test_strategy_with_the_task_network_and_no_labeled_set(digits):
    config = pal.Config(strategy="coreset", device="cpu")
    ctx = make_context(digits, config, [], range(0, 200))
    chosen = build_strategy(config).query(ctx, 12).indices.tolist()
    assert chosen[0] == 0 and len(set(chosen)) == 12
