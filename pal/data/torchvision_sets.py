"""The datasets read through torchvision from ``data_dir``: ``cifar10``, ``fashion_mnist``,
``svhn`` and ``caltech101`` (``download: true`` fetches them) and ``cityscapes`` (downloaded by
hand).

CIFAR-10 and SVHN come as arrays; Caltech-101 and Cityscapes are image files, decoded and resized
once and cached under ``<data_dir>/.pal-cache/`` (:mod:`pal.data.cache`). Caltech-101 has no
official split, so it gets a fixed stratified one (:func:`pal.data.split.stratified_split`);
Cityscapes' val split is its test split. A missing dataset is a :class:`DataError` naming
``data_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pal.data.arrays import from_arrays
from pal.data.cache import CACHE_DIR, cached
from pal.data.image_data import DataError, ImageData
from pal.data.registry import DATASETS, KEEPS_ASPECT
from pal.data.split import stratified_split
from pal.segmentation import IGNORE

__all__ = [
    "load_caltech101",
    "load_cifar10",
    "load_cityscapes",
    "load_fashion_mnist",
    "load_svhn",
]


@DATASETS.register("cifar10")
def load_cifar10(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision CIFAR-10 under ``data_dir``: 50,000 / 10,000 RGB 32x32 images, 10 classes."""
    from torchvision.datasets import CIFAR10

    train, test = _train_test(
        "CIFAR-10", data_dir, download, lambda train: CIFAR10(data_dir, train, download=download)
    )
    return ImageData(
        name="cifar10",
        x_train=torch.from_numpy(train.data).permute(0, 3, 1, 2),  # [N, 32, 32, 3] -> NCHW
        y_train=torch.as_tensor(np.asarray(train.targets, dtype=np.int64)),
        x_test=torch.from_numpy(test.data).permute(0, 3, 1, 2),
        y_test=torch.as_tensor(np.asarray(test.targets, dtype=np.int64)),
        classes=list(train.classes),
        default_augment="crop_flip",
    )


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision Fashion-MNIST under ``data_dir``: 60,000 / 10,000 grey 28x28 images of 10
    kinds of clothing (Xiao et al. 2017; MIT licence)."""
    from torchvision.datasets import FashionMNIST

    train, test = _train_test(
        "Fashion-MNIST",
        data_dir,
        download,
        lambda train: FashionMNIST(data_dir, train, download=download),
    )
    return ImageData(
        name="fashion_mnist",
        x_train=train.data[:, None].contiguous(),  # [N, 28, 28] uint8 -> [N, 1, 28, 28]
        y_train=train.targets.to(torch.int64),
        x_test=test.data[:, None].contiguous(),
        y_test=test.targets.to(torch.int64),
        classes=list(train.classes),
        default_augment="crop_flip",  # clothes keep their kind when mirrored
    )


@DATASETS.register("svhn")
def load_svhn(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision SVHN under ``data_dir`` (splits "train" and "test"), RGB 32x32, digits 0..9."""
    from torchvision.datasets import SVHN

    def split(name: str) -> SVHN:
        return _torchvision(
            "SVHN", data_dir, download, lambda: SVHN(data_dir, split=name, download=download)
        )

    train, test = split("train"), split("test")
    return ImageData(
        name="svhn",
        x_train=torch.from_numpy(train.data),  # already [N, 3, 32, 32]
        y_train=torch.as_tensor(np.asarray(train.labels, dtype=np.int64)),
        x_test=torch.from_numpy(test.data),
        y_test=torch.as_tensor(np.asarray(test.labels, dtype=np.int64)),
        classes=[str(i) for i in range(10)],
        # house numbers are not mirror-symmetric
        default_augment="crop",
    )


@DATASETS.register("caltech101")
def load_caltech101(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision Caltech-101 under ``data_dir``, 101 classes, as RGB ``image_size`` squares.

    ``image_size`` defaults to 64 when None (the photos vary in size, so one must be chosen);
    grey photos are converted to RGB and every photo is squashed to the square. There is no
    official split: 20% of each class goes to test, drawn with ``default_rng(0)``. Decoding runs
    once; the arrays are cached under ``<data_dir>/.pal-cache/``.
    """
    size = 64 if image_size is None else image_size
    cache = Path(data_dir) / CACHE_DIR / f"caltech101-{size}"

    def build() -> dict[str, np.ndarray]:
        from PIL import Image
        from torchvision.datasets import Caltech101

        ds = _torchvision(
            "Caltech-101",
            data_dir,
            download,
            lambda: Caltech101(data_dir, target_type="category", download=download),
        )
        x = np.empty((len(ds), size, size, 3), dtype=np.uint8)
        for i in range(len(ds)):  # one-time decoding of the photo files
            img, _ = ds[i]
            x[i] = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        y = np.asarray(ds.y, dtype=np.int64)
        train, test = stratified_split(y, round(0.2 * len(y)))
        return {
            "x_train": x[train],
            "y_train": y[train],
            "x_test": x[test],
            "y_test": y[test],
            "classes": np.asarray(ds.categories),
        }

    return from_arrays("caltech101", cached(cache, build), default_augment="crop_flip")


@DATASETS.register("cityscapes")
def load_cityscapes(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision Cityscapes (fine annotations) under ``data_dir``: 2975 train / 500 val
    images, the 19 train classes, everything else the ignore label 255.

    Cityscapes needs a manual download (an account at cityscapes-dataset.com): unpack
    ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` into ``data_dir`` so that it
    holds ``leftImg8bit/`` and ``gtFine/``. The official test masks are not public, so the val
    split is the test split. ``image_size`` is the height (default 256); the width keeps the
    1:2 aspect ratio (256 -> 256x512). Images are resized bilinearly and masks by nearest
    neighbour; decoding runs once and the arrays are cached under ``<data_dir>/.pal-cache/``.
    """
    height = 256 if image_size is None else image_size
    size = (height, 2 * height)
    cache = Path(data_dir) / CACHE_DIR / f"cityscapes-{height}"

    def build() -> dict[str, np.ndarray]:
        from PIL import Image
        from torchvision.datasets import Cityscapes

        if download:
            raise DataError(
                "download: Cityscapes cannot be downloaded automatically (it needs an account "
                "at cityscapes-dataset.com); unpack it into data_dir and set download=false"
            )
        train_ids = np.full(256, IGNORE, np.uint8)  # labelId -> trainId
        for c in Cityscapes.classes:
            if 0 <= c.id < 256 and 0 <= c.train_id < 255:
                train_ids[c.id] = c.train_id
        arrays = {}
        for split, key in (("train", "train"), ("val", "test")):
            try:
                ds = Cityscapes(data_dir, split, mode="fine", target_type="semantic")
            except RuntimeError:
                raise DataError(
                    f"data_dir: Cityscapes not found under {data_dir!r}: it must hold "
                    "leftImg8bit/{train,val}/ and gtFine/{train,val}/ (unpack "
                    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                    "cityscapes-dataset.com there)"
                ) from None
            x = np.empty((len(ds), *size, 3), np.uint8)
            m = np.empty((len(ds), *size), np.uint8)
            wh = (size[1], size[0])
            for i in range(len(ds)):  # one-time decoding of the PNG files
                image, target = ds[i]
                x[i] = np.asarray(image.convert("RGB").resize(wh, Image.Resampling.BILINEAR))
                m[i] = train_ids[np.asarray(target.resize(wh, Image.Resampling.NEAREST))]
            arrays[f"x_{key}"], arrays[f"m_{key}"] = x, m
        arrays["classes"] = np.asarray(
            [
                c.name
                for c in sorted(Cityscapes.classes, key=lambda c: c.train_id)
                if 0 <= c.train_id < 255
            ]
        )
        return arrays

    return from_arrays("cityscapes", cached(cache, build), default_augment="crop_flip")


KEEPS_ASPECT.add("cityscapes")  # image_size is its height; the width keeps the 1:2 ratio


def _train_test(what: str, data_dir: str, download: bool, make: Callable[[bool], Any]):
    """``make(train)`` for the training and the test split, through :func:`_torchvision`."""
    return tuple(
        _torchvision(what, data_dir, download, lambda train=train: make(train))
        for train in (True, False)
    )


def _torchvision(what: str, data_dir: str, download: bool, make: Callable):
    try:
        return make()
    except (RuntimeError, OSError) as e:
        if download:
            raise DataError(f"data_dir: could not download {what} into {data_dir!r}: {e}") from e
        raise DataError(
            f"data_dir: {what} not found under {data_dir!r} and download=false; set download=true "
            f"to fetch it, or point data_dir at a folder that holds it"
        ) from None
