"""Backbones by name, the task network and PAL's two-headed scoring network.

A backbone maps images ``[B, C, H, W]`` (float, normalised) to features ``[B, d]`` and exposes
``feature_dim = d``. Every backbone is built from scratch for a given number of input channels and
image size, so one registry serves 8x8 digits and 32x32 CIFAR alike.

- ``cnn``: a small 4-conv CNN for fast runs and tests.
- ``resnet18``: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool (small images).
- ``resnet18_tv``: torchvision's ResNet-18 as is (ImageNet stem), the authors' scoring network.
- ``vgg16``: VGG-16-BN convolutions, a 512-d pooled feature; pools only while the map is >= 2 px.
- ``vgg16_tv``: torchvision's VGG-16-BN as is, 25088x4096x4096 classifier (the authors' task net).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torchvision
from torch import nn

from pal.registry import Registry

BackboneFactory = Callable[[int, tuple[int, int]], nn.Module]
BACKBONES: Registry[BackboneFactory] = Registry("backbone", "task_backbone/scoring_backbone")


def list_backbones() -> list[str]:
    return BACKBONES.names()


def build_backbone(name: str, in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    """Backbone ``name`` for images ``[B, in_channels, *image_hw]``, with ``feature_dim``; its
    dropout layers draw from seeded generators (:func:`seed_dropouts`)."""
    net = BACKBONES.get(name)(in_channels, image_hw)
    assert hasattr(net, "feature_dim"), f"backbone {name!r} must set feature_dim"
    return seed_dropouts(net)


class SeededDropout(nn.Dropout):
    """``nn.Dropout`` that draws its masks from ``generator`` when one is set.

    ``nn.Dropout`` draws from the global RNG; training sets ``generator`` to a seeded one so that
    a run is reproducible for its seed. With ``channelwise`` one draw zeroes a whole channel of
    ``x [B, C, ...]`` (``nn.Dropout1d/2d/3d``); without, each element (``nn.Dropout``). With
    ``generator = None`` it falls back to the global RNG as those do.
    """

    generator: torch.Generator | None = None

    def __init__(self, p: float = 0.5, channelwise: bool = False):
        super().__init__(p)
        self.channelwise = channelwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = (*x.shape[:2], *(1,) * (x.dim() - 2)) if self.channelwise else x.shape
        keep = 1.0 - self.p
        mask = torch.rand(shape, generator=self.generator, device=x.device).lt_(keep)
        return x * mask / keep


def seed_dropouts(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Dropout``, ``nn.Dropout1d/2d/3d`` replaced in place by a
    :class:`SeededDropout` of the same probability, so that training draws its masks from the
    generator :func:`dropout_generator` sets (torchvision's VGG classifier has two)."""
    channelwise = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.Dropout, *channelwise)) and type(child) is not SeededDropout:
                setattr(parent, name, SeededDropout(child.p, isinstance(child, channelwise)))
    return module


@contextlib.contextmanager
def dropout_generator(module: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Every :class:`SeededDropout` of ``module`` draws from ``generator`` inside the block."""
    layers = [m for m in module.modules() if isinstance(m, SeededDropout)]
    for layer in layers:
        layer.generator = generator
    try:
        yield
    finally:
        for layer in layers:
            layer.generator = None


class TaskNet(nn.Module):
    """The task network ``f_theta``: backbone + dropout + linear classifier.

    ``[B,C,H,W] -> logits [B,K]``. Dropout with probability ``dropout`` acts on the features
    ``[B, d]`` before the classifier only (active in train mode); it is what DBAL samples at
    query time (MC dropout), so the backbone runs once per image there.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = SeededDropout(dropout)
        self.classifier = nn.Linear(backbone.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.backbone(x)))


class ScoringNet(nn.Module):
    """PAL's scoring network: one backbone, a rotation head ``g_phi`` and a class head ``h_psi``.

    ``forward(x)`` returns ``(rotation_logits [B, 4], class_logits [B, K])``; the heads are linear
    so that with ``finetune_scope=head`` the rotation head can be fine-tuned on cached body
    features ``[N*4, d]`` (Section 3.3) without another pass through the body.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.rotation_head = nn.Linear(backbone.feature_dim, 4)
        self.class_head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.backbone(x)
        return self.rotation_head(z), self.class_head(z)


# ------------------------------------------------------------------------- backbones
class _Features(nn.Sequential):
    """An ``nn.Sequential`` ending in a ``[B, d]`` feature, tagged with its width."""

    def __init__(self, feature_dim: int, *layers: nn.Module):
        super().__init__(*layers)
        self.feature_dim = feature_dim


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


@BACKBONES.register("cnn")
def cnn(in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    """Small CNN: two conv pairs (32, 64 channels) each followed by a 2x2 max-pool (while the
    image is large enough), a 2x2 average-pooled map (so the feature keeps coarse layout, which
    digits need) and a 128-d feature."""
    side = min(image_hw)
    pool1 = [nn.MaxPool2d(2)] if side >= 4 else []
    pool2 = [nn.MaxPool2d(2)] if side >= 8 else []
    return _Features(
        128,
        *_conv_bn(in_channels, 32),
        *_conv_bn(32, 32),
        *pool1,
        *_conv_bn(32, 64),
        *_conv_bn(64, 64),
        *pool2,
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 128),
        nn.ReLU(True),
    )


def _resnet18(in_channels: int, small_stem: bool) -> nn.Module:
    net = torchvision.models.resnet18(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    net.feature_dim = 512
    return net


@BACKBONES.register("resnet18")
def resnet18(in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    return _resnet18(in_channels, small_stem=True)


@BACKBONES.register("resnet18_tv")
def resnet18_tv(in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    return _resnet18(in_channels, small_stem=False)


def _vgg16_features(in_channels: int, image_hw: tuple[int, int] | None) -> nn.Sequential:
    """VGG-16-BN's conv stack; with ``image_hw`` a pool is kept only while the map is >= 2 px."""
    layers = list(torchvision.models.vgg16_bn(weights=None).features)
    layers[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    if image_hw is None:
        return nn.Sequential(*layers)
    side, kept = min(image_hw), []
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            if side < 2:
                continue
            side //= 2
        kept.append(layer)
    return nn.Sequential(*kept)


@BACKBONES.register("vgg16")
def vgg16(in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    """VGG-16-BN for small images: its 512-channel map, average-pooled to a 512-d feature."""
    return _Features(
        512, _vgg16_features(in_channels, image_hw), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


@BACKBONES.register("vgg16_tv")
def vgg16_tv(in_channels: int, image_hw: tuple[int, int]) -> nn.Module:
    """torchvision's ``vgg16_bn`` unchanged but for the input channels; 4096-d feature."""
    net = torchvision.models.vgg16_bn(weights=None)
    net.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    if min(image_hw) < 32:
        net.features = _vgg16_features(in_channels, image_hw)
    return _Features(4096, net.features, net.avgpool, nn.Flatten(), *list(net.classifier)[:-1])
