"""Semantic segmentation's parts of PAL: metrics, scores and seeded views (Section 3.1, Eq. 2).

Pure tensor functions, no Python loop over samples or pixels:

- :func:`confusion_matrix`, :func:`iou`: mIoU over the dataset's classes, the ignore label
  respected;
- :func:`simclr_score` (``S_S = -cos(g(x_1), g(x_2))``, higher = more novel, as decided in
  ``PAL-METHOD.md``) and :func:`nt_xent` (SimCLR's loss) on the two views' embeddings;
- :func:`pixel_kl_uniform_score`: ``S_C``, the pixel-wise ``-KL(U || h(x))`` (Eq. 3) averaged over
  an image's valid pixels;
- :func:`seeded_views`: two random crop-resize and colour-jitter views of each image whose
  parameters come from ``(seed, image index)`` alone, so a score never depends on the batch;
- :func:`pixel_shares` and :func:`drop_classes`: the class sampling rate of a query by labeled
  pixel area, and ``missing_classes`` for segmentation (annotations set to the ignore label).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = 255  # the ignore label of masks (Cityscapes' convention)


# ---------------------------------------------------------------------- metrics
def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = IGNORE
) -> torch.Tensor:
    """``[C, C]`` counts (row = true class, column = predicted) over the pixels whose target is
    not ``ignore``.

    Args:
        pred, target: integer ``[N, H, W]`` (or any equal shapes).
    """
    valid = target != ignore
    t, p = target[valid].long(), pred[valid].long()
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def iou(confusion: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean IoU and the per-class IoU ``[C]`` of a confusion matrix.

    A class absent from both the targets and the predictions has IoU NaN and is left out of the
    mean (the usual convention: it cannot be right or wrong).
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    per_class = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    present = ~per_class.isnan()
    mean = float(per_class[present].mean()) if present.any() else math.nan
    return mean, per_class.float()


# ---------------------------------------------------------------------- scores
def simclr_score(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``S_S [B] = -cos(z1, z2)`` of two views' embeddings ``[B, d]`` (Eq. 2, sign as decided):
    views the network maps far apart are novel to it."""
    return -F.cosine_similarity(z1.float(), z2.float(), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss of ``B`` positive pairs ``[B, d]``; each view's negatives are the
    other ``2B - 2`` views of the batch."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2B, d]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, positives)


def pixel_kl_uniform_score(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``S_C [B]``: the pixel-wise ``-KL(U || h(x))`` (Eq. 3) averaged over each image's valid
    pixels.

    Args:
        logits: ``[B, C, H, W]`` class logits.
        valid: ``bool [B, H, W]`` pixels that belong to the image (default: all).

    ``-KL(U || p) = mean_c log p_c + log C`` per pixel: 0 for a uniform (confused) prediction,
    very negative for a confident one.
    """
    c = logits.shape[1]
    per_pixel = F.log_softmax(logits.float(), dim=1).mean(dim=1) + math.log(c)  # [B, H, W]
    if valid is None:
        return per_pixel.flatten(1).mean(dim=1)
    valid = valid.to(per_pixel.dtype)
    return (per_pixel * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


# ---------------------------------------------------------------------- views
def _signed(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = (
    _signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on a tensor is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def hashed_uniform(seed: int, index: torch.Tensor, stream: int) -> torch.Tensor:
    """Uniform numbers in ``[0, 1)``, one per ``index [B]``, from ``(seed, index, stream)`` alone
    (SplitMix64 on int64 tensors, wrapping multiplication): the same image gets the same number
    in any batch, on any device.
    """
    offset = _signed(((seed * 1_000_003 + stream + 1) * 0xBF58476D1CE4E5B9) % (1 << 64))
    x = index.long() * _GOLDEN + offset
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    x = x ^ _shr(x, 31)
    return _shr(x, 40).float() / float(1 << 24)  # 24 bits: exact in float32, always < 1


def seeded_views(
    x: torch.Tensor, index: torch.Tensor, seed: int, min_scale: float = 0.5, jitter: float = 0.4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two SimCLR views of each image: random crop (area ``min_scale..1``) resized back to the
    image's size, and brightness/contrast jitter of ``+-jitter``.

    Args:
        x: float ``[B, C, H, W]`` (normalised images).
        index: ``int64 [B]`` dataset indices; with ``seed`` they decide every view.

    Returns:
        ``(view_1, view_2)``, each ``[B, C, H, W]``.
    """
    views = []
    for v in (0, 1):
        u = torch.stack([hashed_uniform(seed, index, 8 * v + k) for k in range(6)]).to(x.device)
        scale = (min_scale + (1 - min_scale) * u[0]).sqrt()  # side of the crop, fraction
        cx = (2 * u[1] - 1) * (1 - scale)  # crop centre, inside the image
        cy = (2 * u[2] - 1) * (1 - scale)
        theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = scale, scale
        theta[:, 0, 2], theta[:, 1, 2] = cx, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        view = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=False)
        brightness = (2 * u[3] - 1) * jitter
        contrast = 1 + (2 * u[4] - 1) * jitter
        mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = (view - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
        views.append(view)
    return views[0], views[1]


# ---------------------------------------------------------------------- labels
def pixel_shares(masks: torch.Tensor, num_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """``[C]``: each class's share of the labeled (not ``ignore``) pixels of ``masks [N, H, W]``."""
    valid = masks[masks != ignore].long()
    counts = torch.bincount(valid, minlength=num_classes)[:num_classes].double()
    return (counts / counts.sum().clamp_min(1)).float()


def drop_classes(masks: torch.Tensor, classes: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """``masks [N, H, W]`` with every pixel of ``classes`` set to ``ignore`` (a copy)."""
    return torch.where(torch.isin(masks, classes.to(masks.device)), ignore, masks).to(masks.dtype)
