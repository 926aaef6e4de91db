"""Batches and their on-device transforms, on ``uint8 [B, C, H, W]`` image tensors.

:class:`Normalizer` standardises ``uint8 [B, C, H, W]`` to ``float [B, C, H, W]`` by the training
set's channel statistics; :func:`augment` crops (zero padding ``H // 8``) and flips a batch,
:func:`augment_with_masks` does the same to images and their masks ``uint8 [B, H, W]``;
:func:`batches` shuffles an epoch of positions into batches. All on the device, no per-sample
Python.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pal.placement import HostImages, Images


class Normalizer:
    """``uint8 [B, C, H, W] -> float [B, C, H, W]``, standardised by the training set's channel
    statistics, in ``memory_format`` (``torch.channels_last`` feeds convolutions in NHWC)."""

    def __init__(
        self,
        x_train: Images,
        memory_format=torch.contiguous_format,
        rows: Any = None,
    ):
        """Statistics of ``x_train`` (``uint8 [N, C, H, W]``), or of its ``rows`` (``int64
        [P]``, e.g. the pool), gathered a chunk at a time: a pool larger than memory (a
        memory-mapped decode cache) is never copied whole."""
        if rows is not None:
            x_train = HostImages(x_train, x_train.device)[rows]
        # channel sums in float64 over chunks of 256: no float copy of the whole set
        # (Cityscapes' is gigabytes)
        total = torch.zeros(x_train.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in x_train.split(256):
            c = chunk.double().div_(255.0)
            total += c.sum(dim=(0, 2, 3))
            squares += c.square().sum(dim=(0, 2, 3))
        n = x_train.numel() // x_train.shape[1]
        mean = total / n
        var = (squares - n * mean.square()) / max(n - 1, 1)
        self.mean = mean.float().view(1, -1, 1, 1)
        self.std = var.clamp_min(0).sqrt().float().clamp_min(1e-3).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def to(self, device: torch.device) -> Normalizer:
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.float() / 255.0 - self.mean) / self.std
        return out.contiguous(memory_format=self.memory_format)


def augment(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (``H // 8`` px) and, for ``crop_flip``, a horizontal flip.

    Args:
        x: ``[B, C, H, W]`` (any dtype), on the generator's device.
        mode: ``none``, ``crop`` or ``crop_flip``.

    Returns:
        ``[B, C, H, W]``, the same dtype; one random offset (and flip) per image.
    """
    if mode == "none":
        return x
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [B, C, H, W]
    if mode == "crop_flip":
        flip = torch.rand(b, generator=generator, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


def augment_with_masks(
    x: torch.Tensor, masks: torch.Tensor, mode: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment` of images ``uint8 [B, C, H, W]`` and their masks ``uint8 [B, H, W]`` with
    the same crop and flip per image; the padding is the ignore label 255 in the masks.

    The mask rides along as one more channel, shifted by +1 (mod 256): the ignore label 255 and
    the zero padding both come back as 255, every class id as itself.
    """
    joint = torch.cat([x, (masks + 1)[:, None]], dim=1)  # uint8 wraps 255 -> 0
    out = augment(joint, mode, generator)
    return out[:, :-1].contiguous(), out[:, -1] - 1  # 0 (padding or ignore) -> 255


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of positions ``[0, n)`` in batches, on the generator's device.

    A trailing batch of one is folded into the previous one (BatchNorm cannot train on a single
    sample with a 1x1 map).
    """
    order = torch.randperm(n, generator=generator, device=generator.device)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks
