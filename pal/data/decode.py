"""Decoding image files into arrays, shared by the loaders that read files (``folder:PATH``,
``manifest:PATH``).

Every file is decoded with PIL to uint8 grey or RGB (resized when ``image_size`` is set), and the
decoded images of a dataset are stacked into channels-last arrays with one size and one channel
count: grey only when every image is grey, images of different sizes only with ``image_size``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pal.data.image_data import DataError

__all__ = ["read_image", "stack_images"]

_GREY_MODES = ("1", "L", "LA")


def read_image(path: Path, image_size: int | None) -> np.ndarray:
    """Decode one file to uint8 ``[H, W]`` (grey) or ``[H, W, 3]``, resized to
    ``image_size x image_size`` (bilinear) when asked.

    Raises:
        DataError: the file cannot be read or is not an image PIL decodes.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"dataset: cannot decode image {str(path)!r} ({e})") from None


def stack_images(splits: dict[str, list[np.ndarray]], where: str) -> dict[str, np.ndarray]:
    """Stack each split's decoded images into uint8 ``[N, H, W, C]`` (``N`` may be 0).

    Args:
        splits: split name -> images from :func:`read_image`; at least one image in all.
        where: what holds the images, for the error (``"the images under '/data/tree'"``).

    Returns:
        split name -> channels-last array; ``C`` is 1 when every image is grey, else 3 (grey
        images repeated over the channels).

    Raises:
        DataError: naming ``image_size``, when the images differ in size.
    """
    everything = [im for ims in splits.values() for im in ims]
    sizes = Counter(im.shape[:2] for im in everything)
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} ({n} images)" for (h, w), n in sizes.most_common(5))
        raise DataError(
            f"image_size: {where} differ in size (H x W: {found}"
            f"{', ...' if len(sizes) > 5 else ''}); set image_size to resize them all to "
            "image_size x image_size"
        )
    # one channel count for the whole dataset: grey only if every image is grey
    channels = 1 if all(im.ndim == 2 for im in everything) else 3
    (h, w), out = next(iter(sizes)), {}
    for split, ims in splits.items():
        x = np.empty((len(ims), h, w, channels), dtype=np.uint8)
        for i, im in enumerate(ims):  # one-time assembly of the decoded files
            x[i] = im[..., None] if im.ndim == 2 else im
        out[split] = x
    return out
