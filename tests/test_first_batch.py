"""TypiClust, the label-free first batch (``pal.strategies.typiclust``), and the statistics of
``benchmarks/first_batch.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pal
from benchmarks.first_batch import batch_stats, chi_square, parse_strategies, random_draws
from pal.rng import torch_generator
from pal.strategies import build_strategy, label_free_strategies
from pal.strategies.typiclust import kmeans, pixel_features, typicality, typiclust_select
from pal.training import Normalizer
from tests.helpers import make_context

CONFIG = pal.Config(strategy="typiclust", device="cpu", batch_size=32)


def label_free_ctx(data, unlabeled, seed=0):
    """A first batch's context: nothing labeled, no task network."""
    ctx = make_context(data, CONFIG, [], unlabeled, seed=seed)
    return dataclasses.replace(ctx, labeled=torch.empty(0, dtype=torch.int64), task_model=None)


@dataclasses.dataclass
class Blobs:
    x_train: torch.Tensor
    y_train: torch.Tensor
    num_classes: int


def blobs(k=8, per=40, seed=0) -> Blobs:
    """``k`` well-separated groups of ``per`` grey 8x8 images: a random pattern per group plus
    small noise, the group as the label; unequal sizes are not needed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(k, 1, 8, 8))
    noise = rng.normal(0, 6, size=(k, per, 1, 8, 8))
    x = np.clip(base[:, None] + noise, 0, 255).astype(np.uint8).reshape(k * per, 1, 8, 8)
    y = np.repeat(np.arange(k), per)
    return Blobs(torch.from_numpy(x), torch.from_numpy(y), k)


def test_typiclust_is_label_free_and_registered():
    assert "typiclust" in label_free_strategies()


def test_label_free_batch_is_n_unique_unlabeled_indices(digits):
    ctx = label_free_ctx(digits, range(100, 500))
    query = build_strategy(CONFIG).query_label_free(ctx, 30)
    chosen = query.indices.tolist()
    assert len(chosen) == len(set(chosen)) == 30
    assert set(chosen) <= set(range(100, 500))
    assert query.scores["typicality"].shape == (30,)
    assert query.metrics["label_free"] == 1.0


def test_label_free_batch_depends_on_the_seed_alone(digits):
    strategy = build_strategy(CONFIG)
    a = strategy.query_label_free(label_free_ctx(digits, range(200), seed=3), 20).indices
    b = strategy.query_label_free(label_free_ctx(digits, range(200), seed=3), 20).indices
    c = strategy.query_label_free(label_free_ctx(digits, range(200), seed=4), 20).indices
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("seed", range(4))
def test_label_free_batch_takes_one_image_per_blob(seed):
    data = blobs(seed=seed)
    ctx = label_free_ctx(data, range(len(data.y_train)), seed=seed)
    chosen = build_strategy(CONFIG).query_label_free(ctx, 8).indices
    assert sorted(data.y_train[chosen].tolist()) == list(range(8))
    # a random batch of 8 covers all 8 groups with probability 8!/8^8 (~0.2%)
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.choice(len(data.y_train), 8, replace=False) for _ in range(500)])
    covered = [len(set(row)) for row in data.y_train.numpy()[draws]]
    assert np.mean(np.equal(covered, 8)) < 0.02


def test_labeled_clusters_are_covered_last():
    """With one labeled point in each of groups 0-3, a query of 4 takes groups 4-7."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 5, generator=gen) * 20
    feats = (centers[:, None] + torch.randn(8, 30, 5, generator=gen)).reshape(-1, 5)
    group = torch.arange(8).repeat_interleave(30)
    labeled = feats[[0, 30, 60, 90]]  # the first point of groups 0-3
    picked, typ, k = typiclust_select(feats, labeled, 4, torch_generator("cpu", 0, "t"))
    assert k == 8
    assert sorted(group[picked].tolist()) == [4, 5, 6, 7]
    assert (typ > 0).all()


def test_labeled_round_query_uses_the_task_network(digits):
    ctx = make_context(digits, CONFIG, range(40), range(40, 300))
    chosen = build_strategy(CONFIG).query(ctx, 25).indices
    assert len(set(chosen.tolist())) == 25
    assert set(chosen.tolist()) <= set(range(40, 300))


def test_typicality_is_highest_at_the_centre_of_a_cloud():
    gen = torch.Generator().manual_seed(1)
    feats = torch.cat(
        [torch.zeros(1, 3), torch.randn(60, 3, generator=gen), torch.full((1, 3), 9.0)]
    )
    typ = typicality(feats, 20)
    assert typ.shape == (62,)
    assert typ[-1] == typ.min()  # the outlier
    assert typ[0] > typ[1:].median()  # the centre


def test_kmeans_separates_blobs_and_repeats_for_a_generator():
    gen = torch.Generator().manual_seed(2)
    feats = torch.cat([torch.randn(50, 4, generator=gen) + 10 * i for i in range(3)])
    a, centers = kmeans(feats, 3, torch_generator("cpu", 0, "k"))
    b, _ = kmeans(feats, 3, torch_generator("cpu", 0, "k"))
    assert torch.equal(a, b)
    assert centers.shape == (3, 4)
    assert all(len(set(a[50 * i : 50 * (i + 1)].tolist())) == 1 for i in range(3))
    assert len(set(a.tolist())) == 3


def test_pixel_features_are_unit_rows_of_at_most_50_components(digits):
    x = digits.x_train[:300]
    feats = pixel_features(x, Normalizer(x), 128)
    assert feats.shape == (300, 50)
    assert torch.allclose(feats.norm(dim=1), torch.ones(300), atol=1e-4)
    again = pixel_features(x, Normalizer(x), 64)  # the chunking changes nothing
    assert torch.allclose(feats, again, atol=1e-4)


def test_benchmark_statistics():
    pool = np.array([100, 100, 200, 600])
    shares = pool / pool.sum()
    assert chi_square(np.array([10, 10, 20, 60]), shares) == pytest.approx(0.0)
    # (10-5)^2/5 + (0-5)^2/5 + (10-10)^2/10 + (30-30)^2/30
    assert chi_square(np.array([10, 0, 10, 30]), shares) == pytest.approx(10.0)
    draws = random_draws(pool, 50, 500)
    assert draws["chi2"].shape == draws["covered"].shape == (500,)
    assert (draws["covered"] <= 4).all()
    balanced = batch_stats(np.array([5, 5, 10, 30]), pool, draws)
    assert balanced["chi2"] == pytest.approx(0.0)
    assert balanced["covered"] == 4
    assert balanced["percentile"] < 10 and balanced["p_value"] == 1.0
    skewed = batch_stats(np.array([50, 0, 0, 0]), pool, draws)
    assert skewed["percentile"] == 100.0 and skewed["p_value"] < 0.01
    assert skewed["covered"] == 1
    assert parse_strategies(["random:20,typiclust", "pal:1"], 5) == {
        "random": 20,
        "typiclust": 5,
        "pal": 1,
    }
