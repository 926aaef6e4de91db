"""The datasets that need no file and no network, built from scikit-learn's bundled digits:
``digits`` (classification, the default dataset) and ``digit_scenes`` (segmentation).

:func:`digit_scenes` is the scene builder itself (digits pasted on a blank canvas), usable on any
grey digits (MNIST too).
"""

from __future__ import annotations

import numpy as np
import torch

from pal.data.image_data import ImageData
from pal.data.registry import DATASETS
from pal.data.split import stratified_split

__all__ = ["digit_scenes", "load_digit_scenes", "load_digits"]


@DATASETS.register("digits")
def load_digits(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """scikit-learn's bundled digits: 1797 grey 8x8 images, 1300 train / 497 test (fixed split).

    Pixel values 0..16 are scaled to 0..255. Needs no file and no network.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y, 497)
    return ImageData(
        name="digits",
        x_train=torch.from_numpy(np.ascontiguousarray(x[train])),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(np.ascontiguousarray(x[test])),
        y_test=torch.from_numpy(y[test]),
        classes=[str(i) for i in range(10)],
        default_augment="crop",
    )


def digit_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    n_scenes: int,
    seed: int,
    canvas: int = 32,
    per_scene: int = 2,
    scale: int = 2,
    threshold: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """A small real-data segmentation set: digits pasted onto a blank canvas.

    Each scene gets ``per_scene`` digits (drawn with replacement), each upscaled ``scale`` times
    and pasted at a random place (a later digit covers an earlier one). A pixel's class is its
    digit's class + 1 where the pasted digit is brighter than ``threshold``, else 0
    (background). Everything is decided by ``seed``.

    Args:
        digits: uint8 ``[N, h, w]`` grey digits (scikit-learn's digits scaled to 0..255, MNIST).
        labels: int ``[N]`` their classes 0..9.

    Returns:
        ``(images uint8 [S, 1, canvas, canvas], masks uint8 [S, canvas, canvas])``; mask values
        in ``0..10`` (``0`` background, ``d + 1`` digit ``d``).
    """
    rng = np.random.default_rng(seed)
    big = digits.repeat(scale, axis=1).repeat(scale, axis=2)  # [N, h*s, w*s]
    dh, dw = big.shape[1:]
    if dh > canvas or dw > canvas:
        raise ValueError(f"digits of {dh}x{dw} do not fit a canvas of {canvas}")
    images = np.zeros((n_scenes, canvas, canvas), np.uint8)
    masks = np.zeros((n_scenes, canvas, canvas), np.uint8)
    scene = np.arange(n_scenes)[:, None, None]
    for _ in range(per_scene):  # a few pastes, each vectorised over all scenes
        pick = rng.integers(0, len(big), n_scenes)
        top = rng.integers(0, canvas - dh + 1, n_scenes)
        left = rng.integers(0, canvas - dw + 1, n_scenes)
        rows = top[:, None, None] + np.arange(dh)[None, :, None]
        cols = left[:, None, None] + np.arange(dw)[None, None, :]
        patch = big[pick]
        ink = patch > threshold
        images[scene, rows, cols] = np.where(ink, patch, images[scene, rows, cols])
        cls = (labels[pick].astype(np.uint8) + 1)[:, None, None]
        masks[scene, rows, cols] = np.where(ink, cls, masks[scene, rows, cols])
    return images[:, None], masks


@DATASETS.register("digit_scenes")
def load_digit_scenes(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """A small real-data segmentation set built from scikit-learn's bundled digits (no file, no
    network): 1000 train / 300 test grey 32x32 scenes, each with two 16x16 digits pasted at
    random places (:func:`digit_scenes`).

    Train scenes use only the digits' train split and test scenes only its test split (the
    split of ``digits``), so no digit image is in both. 11 classes: ``background`` and the digits
    ``0``..``9``; every pixel is annotated. Decided by fixed seeds: the same scenes everywhere.
    """
    digits = load_digits(data_dir, download, None)
    x_train, m_train = digit_scenes(digits.x_train[:, 0].numpy(), digits.y_train.numpy(), 1000, 1)
    x_test, m_test = digit_scenes(digits.x_test[:, 0].numpy(), digits.y_test.numpy(), 300, 2)
    return ImageData(
        name="digit_scenes",
        x_train=torch.from_numpy(x_train),
        y_train=None,
        x_test=torch.from_numpy(x_test),
        y_test=None,
        classes=["background"] + [str(i) for i in range(10)],
        default_augment="crop",
        m_train=torch.from_numpy(m_train),
        m_test=torch.from_numpy(m_test),
    )
