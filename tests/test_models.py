"""Every registered backbone builds for small grey and colour images and gives [B, d] features."""

from __future__ import annotations

import pytest
import torch

import pal
from pal.models import (
    ScoringNet,
    SeededDropout,
    TaskNet,
    build_backbone,
    dropout_generator,
    seed_dropouts,
)


@pytest.mark.parametrize("name", pal.list_backbones())
@pytest.mark.parametrize(("channels", "side"), [(1, 8), (3, 32)])
def test_backbone_features_and_heads(name, channels, side):
    net = build_backbone(name, channels, (side, side))
    x = torch.randn(2, channels, side, side)
    net.eval()
    with torch.no_grad():
        feats = net(x)
        rot, cls = ScoringNet(net, 7).eval()(x)
        logits = TaskNet(net, 7).eval()(x)
    assert feats.shape == (2, net.feature_dim)
    assert rot.shape == (2, 4) and cls.shape == (2, 7) and logits.shape == (2, 7)


def test_builtin_backbones_are_registered():
    assert set(pal.list_backbones()) >= {"cnn", "resnet18", "resnet18_tv", "vgg16", "vgg16_tv"}


def test_small_image_variants_differ_from_the_torchvision_ones():
    small, tv = build_backbone("resnet18", 3, (32, 32)), build_backbone("resnet18_tv", 3, (32, 32))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert tv.conv1.kernel_size == (7, 7) and tv.conv1.stride == (2, 2)
    assert build_backbone("vgg16", 3, (32, 32)).feature_dim == 512
    assert build_backbone("vgg16_tv", 3, (32, 32)).feature_dim == 4096


def test_vgg16_keeps_every_pool_that_fits():
    pools = [
        sum(isinstance(m, torch.nn.MaxPool2d) for m in build_backbone("vgg16", 1, (s, s)).modules())
        for s in (8, 32)
    ]
    assert pools == [3, 5]  # 8 -> 4 -> 2 -> 1 and no pool past a 1x1 map; 32 keeps all five


def test_same_seed_same_initial_weights():
    from pal.rng import seeded_init

    with seeded_init(3, "task-init", 0):
        a = build_backbone("cnn", 1, (8, 8))
    with seeded_init(3, "task-init", 0):
        b = build_backbone("cnn", 1, (8, 8))
    with seeded_init(3, "task-init", 1):
        c = build_backbone("cnn", 1, (8, 8))
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def draws_from_global_rng(net: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether a train-mode forward of ``net`` changes with the global RNG's state when every
    generator pal hands it (:func:`pal.models.dropout_generator`) is seeded the same."""
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        with dropout_generator(net, torch.Generator().manual_seed(0)):
            outs.append(net.train()(x))
    return not torch.equal(*outs)


class _GlobalNoise(torch.nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x)  # the global RNG: what the contract must catch


def test_the_contract_catches_a_layer_drawing_from_the_global_rng():
    x = torch.randn(2, 3, 8, 8)
    assert draws_from_global_rng(torch.nn.Sequential(_GlobalNoise()), x)
    assert draws_from_global_rng(torch.nn.Dropout(0.5), x)  # torch's own dropout does too
    assert not draws_from_global_rng(seed_dropouts(torch.nn.Sequential(torch.nn.Dropout(0.5))), x)


@pytest.mark.parametrize("name", pal.list_backbones())
def test_backbones_draw_randomness_only_from_seeded_generators(name):
    """torchvision's VGG classifier carries two ``nn.Dropout``: as built here they draw from the
    seeded generator, so the same seed gives the same training whatever else ran before."""
    torch.manual_seed(0)
    net = TaskNet(build_backbone(name, 3, (32, 32)), 5, dropout=0.5)
    assert not draws_from_global_rng(net, torch.randn(2, 3, 32, 32))
    if name == "vgg16_tv":
        seeded = [m for m in net.backbone.modules() if isinstance(m, SeededDropout)]
        assert len(seeded) == 2 and all(m.p == 0.5 for m in seeded)


@pytest.mark.parametrize("name", ["segcnn", "mobilenetv2"])
def test_segmentation_networks_draw_randomness_only_from_seeded_generators(name):
    from pal.segnets import build_segnet

    torch.manual_seed(0)
    assert not draws_from_global_rng(build_segnet(name, 3, 4), torch.randn(2, 3, 32, 32))


def test_channel_dropout_keeps_its_channelwise_masks():
    net = seed_dropouts(torch.nn.Sequential(torch.nn.Dropout2d(0.5)))
    with dropout_generator(net, torch.Generator().manual_seed(0)):
        out = net.train()(torch.ones(4, 8, 5, 5))
    per_channel = out.flatten(2)  # [B, C, H*W]: each channel all zero or all 2
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))
    assert {0.0, 2.0} == set(per_channel.unique().tolist())
