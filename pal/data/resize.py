"""Resizing whole image and mask tensors, as ``load_dataset(..., image_size=...)`` does.

Images are resized bilinearly with antialiasing (downscaling averages instead of aliasing), in
batches so the float working copy stays small; masks by nearest neighbour, so class ids and the
ignore label are never blended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_images", "resize_masks"]

# float32 working memory per resize batch; bounds peak memory for big datasets
_RESIZE_BATCH_BYTES = 64 << 20


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` images to uint8 ``[N, C, size, size]``.

    Bilinear with antialiasing (so downscaling averages instead of aliasing), in batches so the
    float copy stays small. Returns ``x`` itself when it already has that size.
    """
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    per_batch = max(1, _RESIZE_BATCH_BYTES // (4 * c * max(h * w, size * size)))
    for start in range(0, n, per_batch):
        batch = x[start : start + per_batch].float()
        batch = F.interpolate(
            batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + per_batch] = batch.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_masks(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 masks ``[N, H, W]`` to ``[N, *size]`` by nearest neighbour (class ids and the
    ignore label are never blended)."""
    if tuple(m.shape[1:]) == tuple(size):
        return m
    out = F.interpolate(m[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(torch.uint8).contiguous()
