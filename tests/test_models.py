"""Every registered backbone builds for small grey and colour images and gives [B, d] features."""

from __future__ import annotations

import pytest
import torch

import pal
from pal.models import ScoringNet, TaskNet, build_backbone


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
