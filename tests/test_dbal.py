"""DBAL (MC dropout): the BALD formula, the strategy on real digits and the task net's dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pal
from pal import scoring
from pal.models import TaskNet, build_backbone
from pal.strategies import STRATEGIES, build_strategy
from pal.strategies.dbal import mc_dropout_probs
from pal.training import Normalizer, eval_chunk
from tests.helpers import make_context

SMALL = pal.Config(strategy="dbal", mc_samples=8, dropout=0.5, batch_size=32, device="cpu")


# --------------------------------------------------------------------------- formula
def test_bald_is_zero_when_the_passes_agree():
    p = torch.tensor([0.7, 0.2, 0.1])
    mc = torch.stack([p, p], dim=1).unsqueeze(0)  # [1, 3, 2]
    assert scoring.bald(mc).item() == pytest.approx(0.0, abs=1e-7)
    assert scoring.bald(mc).item() >= 0.0


def test_bald_of_confident_disagreeing_passes_is_log_2():
    mc = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [N=1, C=2, T=2]: [1, 0] then [0, 1]
    assert scoring.bald(mc).item() == pytest.approx(math.log(2))


def test_bald_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5, 7)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # [N, C, T]
    mean = probs.mean(axis=2)
    expected = -(mean * np.log(mean)).sum(1) + (probs * np.log(probs)).sum(1).mean(1)
    got = scoring.bald(torch.from_numpy(probs))
    assert got.numpy() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_bald_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, C, T\]"):
        scoring.bald(torch.rand(3, 4))


# -------------------------------------------------------------------------- strategy
@pytest.fixture(scope="module")
def ctx(digits):
    return lambda config, seed=0: make_context(
        digits, config, range(0, 60), range(60, 260), seed=seed
    )


@pytest.mark.parametrize("acquisition", ["bald", "max_entropy"])
def test_dbal_returns_n_unique_unlabeled_indices_deterministically(ctx, acquisition):
    config = SMALL.replace(dbal_acquisition=acquisition)
    first = build_strategy(config).query(ctx(config, seed=3), 25).indices
    second = build_strategy(config).query(ctx(config, seed=3), 25).indices
    assert first.numel() == 25 and torch.unique(first).numel() == 25
    assert set(first.tolist()) <= set(range(60, 260))
    assert torch.equal(first, second)


def test_bald_and_max_entropy_choose_differently(ctx):
    bald = build_strategy(SMALL).query(ctx(SMALL), 30).indices
    config = SMALL.replace(dbal_acquisition="max_entropy")
    max_ent = build_strategy(config).query(ctx(config), 30).indices
    assert not torch.equal(bald, max_ent)


def test_mc_passes_differ_and_share_one_backbone_pass(digits, monkeypatch):
    x = digits.x_train[:40]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TaskNet(build_backbone("cnn", 1, (8, 8)), 10)
    calls = []
    eval_chunk(net.backbone, x, 16)  # the chunk rule's one-image probe, before the count
    original = net.backbone.forward
    monkeypatch.setattr(net.backbone, "forward", lambda t: calls.append(len(t)) or original(t))
    probs = mc_dropout_probs(
        net, x, Normalizer(x), p=0.5, samples=6, batch_size=16, generator=torch.Generator()
    )
    assert probs.shape == (40, 10, 6)
    assert sum(calls) == 40  # features once per image, not once per pass
    assert torch.allclose(probs.sum(dim=1), torch.ones(40, 6), atol=1e-5)
    assert not torch.allclose(probs[..., 0], probs[..., 1])


def test_dbal_rejects_zero_dropout():
    with pytest.raises(pal.ConfigError, match=r"^dropout: DBAL needs dropout > 0"):
        STRATEGIES.get("dbal").check_config(SMALL.replace(dropout=0.0), 10, (8, 8))
    STRATEGIES.get("dbal").check_config(SMALL, 10, (8, 8))


@pytest.mark.parametrize(
    ("key", "value"), [("mc_samples", 1), ("dropout", 1.0), ("dbal_acquisition", "mean_std")]
)
def test_config_range_checks(key, value):
    with pytest.raises(pal.ConfigError, match=rf"^{key}: must be"):
        pal.Config(**{key: value})


# ------------------------------------------------------------------- task net dropout
def test_tasknet_dropout_acts_in_train_mode_only(digits):
    x = Normalizer(digits.x_train)(digits.x_train[:16])
    net = TaskNet(build_backbone("cnn", 1, (8, 8)), 10, dropout=0.5)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        net.backbone.eval()  # BatchNorm frozen: only dropout can make the passes differ
        assert not torch.allclose(net(x), net(x))


def test_tasknet_dropout_masks_come_from_its_generator(digits):
    """Training draws the masks from a seeded generator, so a run repeats for its seed."""
    x = Normalizer(digits.x_train)(digits.x_train[:16])
    net = TaskNet(build_backbone("cnn", 1, (8, 8)), 10, dropout=0.5)
    net.train()
    net.backbone.eval()
    outs = []
    with torch.no_grad():
        for _ in range(2):
            net.dropout.generator = torch.Generator().manual_seed(5)
            torch.manual_seed(len(outs))  # the global RNG must not matter
            outs.append(net(x))
    assert torch.equal(outs[0], outs[1])
