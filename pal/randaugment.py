"""RandAugment on device-resident ``uint8 [B, C, H, W]`` batches, batched and seeded.

RandAugment (Cubuk, Zoph, Shlens and Le, "RandAugment: Practical automated data augmentation with
a reduced search space", CVPR Workshops 2020) applies ``ops`` operations to each image, each drawn
uniformly (with replacement) from a fixed list and applied at one shared strength. Here the
strength ``magnitude`` lies in ``[0, 1]`` (1: the strongest setting; the paper's ``M = 9`` of 30
is about 0.3), and every image draws its own operations and, where an operation has one, its own
sign. The operations and their range at ``magnitude = 1`` (``m`` scales each linearly):

========================  =========================================================================
``identity``              the image unchanged
``autocontrast``          each channel's range stretched to 0..255 (no strength)
``equalize``              each channel's histogram equalised, as PIL's ``ImageOps.equalize``
``brightness``            pixels times ``1 ± 0.9 m``
``contrast``              blended with the image's mean grey: factor ``1 ± 0.9 m``
``sharpness``             blended with PIL's 3x3 smoothing (borders kept): factor ``1 ± 0.9 m``
``solarize``              pixels ``>= 256 (1 - m)`` inverted (at 1: every pixel)
``posterize``             ``8 - round(4 m)`` top bits kept (at 1: 4 bits)
``rotate``                ``± 30 m`` degrees about the centre
``shear_x``, ``shear_y``  shear factor ``± 0.3 m`` about the centre
``translate_x``           ``± round(0.3 m W)`` pixels
``translate_y``           ``± round(0.3 m H)`` pixels
========================  =========================================================================

The geometric operations share one ``F.affine_grid`` + ``F.grid_sample`` over the whole batch
(nearest neighbour, zero fill) with a per-image 2x3 matrix (the identity for the images that drew
no geometric operation); the colour operations run on the whole batch (in float where they blend)
and each image picks the result of the operation it drew by one gather. No per-image Python, no
host synchronisation: the cost is every operation on every image, once per ``ops``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "brightness",
    "contrast",
    "sharpness",
    "solarize",
    "posterize",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
"""The operations, in the order of the op index each image draws."""

GEOMETRIC = OPS[-5:]
"""The operations done by the shared affine warp (last in :data:`OPS`)."""

MAX_ENHANCE = 0.9  # brightness / contrast / sharpness factor 1 ± 0.9 m
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # of the image side
MAX_POSTERIZE_BITS = 4  # bits dropped at magnitude 1


def rand_augment(
    x: torch.Tensor, ops: int, magnitude: float, generator: torch.Generator
) -> torch.Tensor:
    """RandAugment: ``ops`` random operations per image, each at strength ``magnitude``.

    Args:
        x: ``uint8 [B, C, H, W]``, on the generator's device.
        ops: how many operations each image gets (``>= 0``), drawn with replacement from
            :data:`OPS`.
        magnitude: the strength of every operation, in ``[0, 1]``.
        generator: the source of every random draw: per round, one op index ``[B]`` and then
            one sign ``[B]``, so the same generator state gives the same output.

    Returns:
        ``uint8 [B, C, H, W]`` on the same device; ``x`` itself when ``ops`` or ``magnitude`` is 0.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: must be a uint8 tensor [B, C, H, W], got {got}")
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 0:
        raise ValueError(f"ops: must be an integer >= 0, got {ops!r}")
    if isinstance(magnitude, bool) or not isinstance(magnitude, int | float):
        raise ValueError(f"magnitude: must be a number in [0, 1], got {magnitude!r}")
    if not 0.0 <= magnitude <= 1.0:  # also rejects NaN
        raise ValueError(f"magnitude: must be in [0, 1], got {magnitude!r}")
    if ops == 0 or magnitude == 0:
        return x
    b = x.shape[0]
    out = x
    for _ in range(ops):
        op = torch.randint(0, len(OPS), (b,), generator=generator, device=x.device)
        flip = torch.rand(b, generator=generator, device=x.device) < 0.5
        sign = torch.where(flip, -1.0, 1.0)  # float32 [B]
        out = _apply(out, op, sign, float(magnitude))
    return out


def _apply(x: torch.Tensor, op: torch.Tensor, sign: torch.Tensor, m: float) -> torch.Tensor:
    """One round: image ``i`` of ``uint8 [B, C, H, W]`` gets operation ``OPS[op[i]]`` with sign
    ``sign[i]`` (``float [B]``, ±1) at magnitude ``m``.

    Every colour operation and one affine warp run on the whole batch; each image then picks its
    own result by one gather (cheaper than a ``torch.where`` per operation)."""
    enhance = 1.0 + sign * (MAX_ENHANCE * m)  # [B]
    candidates = [  # in the order of OPS, the geometric ops last and shared
        x,
        _autocontrast(x),
        _equalize(x),
        _brightness(x, enhance),
        _contrast(x, enhance),
        _sharpness(x, enhance),
        _solarize(x, 256.0 * (1.0 - m)),
        _posterize(x, 8 - round(MAX_POSTERIZE_BITS * m)),
        _affine(x, _theta(op, sign, m, x.shape[-2], x.shape[-1])),
    ]
    # candidate of each image: identity and colour ops their own index, the geometric ops (last
    # in OPS) the shared warp
    slot = op.clamp(max=len(OPS) - len(GEOMETRIC))  # [B]
    return torch.stack(candidates)[slot, torch.arange(x.shape[0], device=x.device)]


def _theta(op: torch.Tensor, sign: torch.Tensor, m: float, h: int, w: int) -> torch.Tensor:
    """``float [B, 2, 3]`` matrices for ``F.affine_grid`` (output -> input, normalised
    coordinates): each image's geometric operation, the identity for the others.

    A map ``A`` on pixel offsets from the centre becomes ``diag(2/W, 2/H) A diag(W/2, H/2)`` in
    normalised coordinates, so rotation and shear stay true on non-square images."""
    b = op.shape[0]
    zero, one = torch.zeros_like(sign), torch.ones_like(sign)
    angle = sign * math.radians(MAX_ROTATE_DEG * m)
    cos, sin = torch.cos(angle), torch.sin(angle)
    shear = sign * (MAX_SHEAR * m)
    # whole pixels, so a translation moves the image exactly
    tx = torch.round(sign * (MAX_TRANSLATE * m * w)) * (2.0 / w)
    ty = torch.round(sign * (MAX_TRANSLATE * m * h)) * (2.0 / h)
    rows = {  # name -> (a, b, c, d, e, f) of [[a, b, c], [d, e, f]]
        "rotate": (cos, -sin * (h / w), zero, sin * (w / h), cos, zero),
        "shear_x": (one, shear * (h / w), zero, zero, one, zero),
        "shear_y": (one, zero, zero, shear * (w / h), one, zero),
        "translate_x": (one, zero, -tx, zero, one, zero),
        "translate_y": (one, zero, zero, zero, one, -ty),
    }
    theta = torch.stack((one, zero, zero, zero, one, zero), dim=1).view(b, 2, 3)
    for name, entries in rows.items():
        matrix = torch.stack(entries, dim=1).view(b, 2, 3)
        theta = torch.where((op == OPS.index(name))[:, None, None], matrix, theta)
    return theta


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, C, H, W]`` resampled through ``theta`` ``float [B, 2, 3]`` (output -> input,
    normalised coordinates); nearest neighbour, zero outside the image."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance``: ``degenerate + factor (x - degenerate)`` per image (``factor
    [B]``), rounded and clipped to ``uint8``."""
    f = factor[:, None, None, None]
    return _to_uint8(degenerate + f * (x.float() - degenerate))


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, C, H, W]`` pixels times ``factor [B]`` (blend with black)."""
    return _blend(x, torch.zeros((), device=x.device), factor)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each image's mean grey level (ITU-R 601 luma for 3 channels) by ``factor
    [B]``."""
    xf = x.float()
    if x.shape[1] == 3:
        grey = 0.299 * xf[:, 0:1] + 0.587 * xf[:, 1:2] + 0.114 * xf[:, 2:3]
    else:
        grey = xf.mean(1, keepdim=True)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's ``SMOOTH`` filter (3x3, centre weight 5 of 13; border pixels kept) by
    ``factor [B]``: above 1 sharpens, below 1 blurs."""
    b, c, h, w = x.shape
    if h < 3 or w < 3:
        return x
    xf = x.float()
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = F.conv2d(xf, kernel, groups=c).round_()  # [B, C, H - 2, W - 2]
    degenerate = xf.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(x, degenerate, factor)


def _solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels ``>= threshold`` inverted (``255 - v``); the others kept."""
    return x ^ (x >= threshold).to(torch.uint8).mul_(255)  # v ^ 255 == 255 - v


def _posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The top ``bits`` (1..8) of each pixel kept, the others zeroed."""
    mask = (0xFF << (8 - bits)) & 0xFF
    return x & mask


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Each channel of each image stretched linearly so its minimum becomes 0 and its maximum
    255; a constant channel is kept."""
    xf = x.float()
    lo = xf.amin(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
    hi = xf.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo  # constant: offset 0, scale 1
    scale = torch.where(flat, 1.0, 255.0 / (hi - lo).clamp(min=1.0))
    return _to_uint8((xf - torch.where(flat, 0.0, lo)) * scale)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Each channel of each image histogram-equalised exactly as PIL's ``ImageOps.equalize``:
    ``step = (pixels - count of the brightest value) // 255``, ``lut[v] = (step // 2 + count
    below v) // step``; a channel with ``step == 0`` is kept."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()  # [BC, HW]
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    brightest = hist.gather(1, flat.amax(1, keepdim=True))  # [BC, 1]
    step = (h * w - brightest) // 255
    below = hist.cumsum(1) - hist  # [BC, 256]
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))  # step 0: kept
    return lut.gather(1, flat).to(torch.uint8).view(b, c, h, w)
