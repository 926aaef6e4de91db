"""The inference chunk rule (:func:`pal.training.eval_chunk`): sized from the network and the
cache, deterministic, within ``[passes, batch_size]``, and invisible in the scores."""

from __future__ import annotations

import pytest
import torch

from pal import training
from pal.models import ScoringNet, TaskNet, build_backbone
from pal.pretext import rotation
from pal.segnets import build_segnet
from pal.training import Normalizer, eval_chunk, eval_chunks, forward_profile

CACHE = 32 * 2**20  # the 32 MiB last-level cache the constants were measured with


@pytest.fixture
def cache(monkeypatch):
    """Pin the last-level cache so that the expected chunks do not depend on the machine."""
    monkeypatch.setattr(training.inference, "last_level_cache_bytes", lambda: CACHE)


def scoring_net(name: str, shape: tuple[int, int, int]) -> ScoringNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ScoringNet(build_backbone(name, shape[0], shape[1:]), 10).eval()


def images(n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.zeros(n, *shape, dtype=torch.uint8)


def chunk(net, shape, batch_size=1024, passes=1, bf16=False) -> int:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return eval_chunk(net, images(2, shape), batch_size, passes)


def test_profile_counts_activations_macs_and_weights():
    net = scoring_net("cnn", (1, 28, 28))
    profile = forward_profile(net, (1, 28, 28))
    assert profile.activation == 32 * 28 * 28  # the first conv pair's output
    assert profile.weights == sum(p.numel() * 4 for p in net.parameters())
    convs = 28 * 28 * 32 * 9 * (1 + 32) + 14 * 14 * 64 * 9 * (32 + 64)
    assert profile.macs == convs + 256 * 128 + 128 * (4 + 10)
    assert forward_profile(net, (1, 28, 28)) is profile  # made once per network and shape


def test_chunks_follow_activations_and_weights(cache):
    cnn = chunk(scoring_net("cnn", (1, 28, 28)), (1, 28, 28))
    resnet_tv = chunk(scoring_net("resnet18_tv", (3, 32, 32)), (3, 32, 32))
    vgg = scoring_net("vgg16", (3, 32, 32))
    vgg_tv = scoring_net("vgg16_tv", (3, 32, 32))
    # cache-bound: 16 MiB over the largest activation per image, nearest power of two
    assert (cnn, resnet_tv, chunk(vgg, (3, 32, 32))) == (128, 256, 64)
    assert chunk(vgg_tv, (3, 32, 32)) == 64
    # bf16 halves the activations; VGG-16-BN's 537 MB of weights, recast every chunk, need more
    assert chunk(vgg, (3, 32, 32), bf16=True) == 128
    assert chunk(vgg_tv, (3, 32, 32), bf16=True) == 256
    assert resnet_tv > cnn


def test_chunks_stay_within_passes_and_batch_size(cache):
    net = scoring_net("resnet18_tv", (3, 32, 32))
    x = images(10, (3, 32, 32))
    assert eval_chunk(net, x, 1024, passes=4) == 64  # 256 forward images
    assert eval_chunk(net, x, 100, passes=4) == 25  # batch_size bounds the forward images
    assert eval_chunk(net, x, 3, passes=4) == 1
    big = images(2, (3, 256, 256))  # 4 MiB per activation: 4 forward images, 1 per pass
    assert eval_chunk(net, big, 1024, passes=4) == 1
    assert [len(c) for c in eval_chunks(net, x, 8, passes=4)] == [2] * 5


def test_chunks_are_deterministic(cache):
    first, second = scoring_net("resnet18_tv", (3, 32, 32)), scoring_net("resnet18_tv", (3, 32, 32))
    second.train()
    got = [chunk(first, (3, 32, 32)), chunk(first, (3, 32, 32)), chunk(second, (3, 32, 32))]
    assert got == [256] * 3
    assert second.training and all(m.training for m in second.modules())  # mode restored


def test_other_devices_keep_batch_size(cache):
    """Off the CPU (a GPU; here the meta device) a chunk is ``batch_size`` forward images."""
    net = scoring_net("cnn", (1, 28, 28))
    x = torch.empty(4, 1, 28, 28, dtype=torch.uint8, device="meta")
    assert eval_chunk(net, x, 1024, passes=4) == 256
    assert eval_chunk(net, x, 1024) == 1024


def test_scores_in_chunks_equal_scores_whole(cache, monkeypatch):
    net = scoring_net("cnn", (1, 28, 28))
    x = torch.randint(0, 256, (70, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator())
    normalize = Normalizer(x)
    chunked = rotation.score_pool(net, x, normalize, 1024, keep_features=True)  # 32 a chunk
    tiny = rotation.score_pool(net, x, normalize, 8, keep_features=True)  # 2 a chunk
    monkeypatch.setattr(training.inference, "last_level_cache_bytes", lambda: 2**40)
    whole = rotation.score_pool(net, x, normalize, 1024, keep_features=True)  # 1 chunk
    for got in (chunked, tiny):
        assert torch.allclose(got.s_s, whole.s_s, atol=1e-5)
        assert torch.allclose(got.s_c, whole.s_c, atol=1e-5)
        assert torch.allclose(got.features, whole.features, atol=1e-5)


def test_every_network_kind_gets_a_chunk(cache):
    seg = build_segnet("segcnn", 3, 5).eval()
    task = TaskNet(build_backbone("cnn", 3, (32, 32)), 10).eval()
    x = images(2, (3, 32, 32))
    assert eval_chunk(seg, x, 1024, passes=3) == 21  # 64 forward images (ASPP's 320 KiB)
    assert eval_chunk(task.backbone, x, 1024) >= 1
