"""Segmentation networks: encoders by name and the DeepLabv3 network built on them.

An encoder maps images ``[B, C, H, W]`` to a bottleneck map ``[B, c, H/s, W/s]`` and exposes
``out_channels = c`` and ``output_stride = s``. :class:`SegNet` puts torchvision's DeepLabv3
head (ASPP) on it and upsamples the logits to the input size; its :meth:`SegNet.embedding`
(the pooled bottleneck) is what PAL's SimCLR head reads for segmentation (Section 3.1).

- ``mobilenetv2``: torchvision's MobileNetV2 features (the paper's task network), output stride
  16 by dilating the last stage instead of striding (as DeepLabv3 does), any input channels.
- ``segcnn``: a small 4-conv encoder at output stride 4, for CPU runs and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from pal.models import seed_dropouts
from pal.registry import Registry

EncoderFactory = Callable[[int], nn.Module]
SEG_ENCODERS: Registry[EncoderFactory] = Registry("segmentation encoder", "task_backbone")


class SegNet(nn.Module):
    """DeepLabv3: ``encoder`` -> ASPP head -> bilinear upsampling to the input size.

    The ASPP's dropout is a :class:`pal.models.SeededDropout`: training draws its masks from a
    seeded generator (:func:`pal.models.dropout_generator`), so a run is reproducible.

    ``forward(x [B, C, H, W]) -> logits [B, K, H, W]``; ``embedding(x) -> [B, c]``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = DeepLabHead(encoder.out_channels, num_classes)
        seed_dropouts(self)  # the ASPP's dropout (and any other), from a seeded generator

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c, H/s, W/s]``, the encoder's output."""
        return self.encoder(x)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c]``: the bottleneck averaged over space."""
        return self.bottleneck(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.bottleneck(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segnet(name: str, in_channels: int, num_classes: int) -> SegNet:
    """:class:`SegNet` on encoder ``name`` for ``in_channels``-channel images."""
    return SegNet(SEG_ENCODERS.get(name)(in_channels), num_classes)


class _Encoder(nn.Sequential):
    def __init__(self, out_channels: int, output_stride: int, *layers: nn.Module):
        super().__init__(*layers)
        self.out_channels = out_channels
        self.output_stride = output_stride


@SEG_ENCODERS.register("mobilenetv2")
def mobilenetv2(in_channels: int, output_stride: int = 16) -> nn.Module:
    features = torchvision.models.mobilenet_v2(weights=None).features
    if in_channels != 3:
        first = features[0][0]
        features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 2, 1, bias=False)
    _dilate_after(features, output_stride)
    return _Encoder(1280, output_stride, *features)


def _dilate_after(features: nn.Module, output_stride: int) -> None:
    """Past ``output_stride``, a 3x3 conv of stride 2 keeps stride 1 and it and every later 3x3
    conv are dilated by the stride given up (DeepLab's atrous encoder)."""
    stride, dilation = 1, 1
    for conv in (m for m in features.modules() if isinstance(m, nn.Conv2d)):
        if conv.kernel_size != (3, 3):
            continue
        if conv.stride == (2, 2):
            if stride >= output_stride:
                conv.stride = (1, 1)
                dilation *= 2
            else:
                stride *= 2
        if dilation > 1:
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


@SEG_ENCODERS.register("segcnn")
def segcnn(in_channels: int) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    layers = [*block(in_channels, 32, 1), *block(32, 32, 2), *block(32, 64, 1), *block(64, 64, 2)]
    return _Encoder(64, 4, *layers)
