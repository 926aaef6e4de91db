"""Labelled image datasets, held as uint8 tensors on the CPU.

Every loader returns an :class:`ImageData` with images as uint8 ``[N, C, H, W]`` and labels as
int64 ``[N]``; the experiment loop moves them to the device once and normalises there. Names:

* ``digits``: scikit-learn's bundled 8x8 digits (no file, no network), the default dataset.
* ``cifar10``, ``svhn``, ``caltech101``: torchvision datasets under ``data_dir``.
* ``npz:PATH``: a user's own arrays in an ``.npz`` file (``x_train``, ``y_train``, ``x_test``,
  ``y_test``, optional ``classes``).
* ``folder:PATH``: an image-folder tree ``PATH/{train,test}/<class>/*.png|jpg|...``, or a
  ``.tar.gz`` archive holding one.

Datasets without an official test split get a fixed stratified split drawn with
``numpy.random.default_rng(0)``: the split belongs to the dataset, not to an experiment, so runs
with different seeds are scored on the same test images.

Decoding image files is slow (CIFAR-10 as JPEGs is 60,000 files), so decoded arrays are cached as
``.npz`` under ``<data_dir>/.pal-cache/``; the cache key covers what would change the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pal.config import ConfigError
from pal.registry import Registry, UnknownNameError
from pal.segmentation import IGNORE

__all__ = [
    "DATASETS",
    "DataError",
    "ImageData",
    "list_datasets",
    "load_dataset",
    "resize_images",
    "stratified_split",
]

AUGMENTS = ("none", "crop", "crop_flip")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CACHE_DIR = ".pal-cache"
NPZ_PREFIX = "npz:"
FOLDER_PREFIX = "folder:"
_GREY_MODES = ("1", "L", "LA")
# loaders that read image_size as the height and keep the images' aspect ratio
KEEPS_ASPECT = frozenset({"cityscapes"})
# float32 working memory per resize batch; bounds peak memory for big datasets
_RESIZE_BATCH_BYTES = 64 << 20


class DataError(ConfigError):
    """A dataset cannot be loaded as configured; the message names the config field."""


class UnknownDatasetError(DataError, UnknownNameError):
    """An unknown dataset name; also a ``KeyError`` like other unknown registry names."""


@dataclasses.dataclass(repr=False)
class ImageData:
    """An image dataset as uint8 CPU tensors (the loop moves them to the device once): labels per
    image (classification) or a mask per image (semantic segmentation).

    Attributes:
        name: the dataset name as given to :func:`load_dataset`.
        x_train: uint8 ``[N, C, H, W]``, contiguous.
        y_train: int64 ``[N]``, values in ``[0, num_classes)``; ``None`` for segmentation.
        x_test: uint8 ``[M, C, H, W]``, contiguous, same ``C, H, W`` as ``x_train``.
        y_test: int64 ``[M]``; ``None`` for segmentation.
        classes: class names, index = label (for segmentation: the mask values).
        default_augment: ``"none"``, ``"crop"`` or ``"crop_flip"``: what ``augment="auto"`` means
            for this data (digits and house numbers must not be flipped).
        m_train, m_test: segmentation masks, uint8 ``[N, H, W]`` / ``[M, H, W]``, values in
            ``[0, num_classes)`` or :data:`pal.segmentation.IGNORE` (255, not annotated);
            ``None`` for classification.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    classes: list[str]
    default_augment: str
    m_train: torch.Tensor | None = None
    m_test: torch.Tensor | None = None

    @property
    def task(self) -> str:
        """``"segmentation"`` when the dataset has masks, else ``"classification"``."""
        return "classification" if self.m_train is None else "segmentation"

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        if (self.m_train is None) != (self.m_test is None):
            raise DataError(f"dataset: {self.name}: give masks for both splits or neither")
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(
                    f"dataset: {self.name}: x_{split} must be uint8 [N, C, H, W], "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            setattr(self, f"x_{split}", x.contiguous())
            if self.task == "segmentation":
                self._check_masks(split, x)
            else:
                self._check_labels(split, x)
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(
                f"dataset: {self.name}: test images are {tuple(self.x_test.shape[1:])} (C, H, W) "
                f"but train images are {tuple(self.x_train.shape[1:])}"
            )
        if self.default_augment not in AUGMENTS:
            raise DataError(
                f"augment: default for {self.name} must be one of {list(AUGMENTS)}, "
                f"got {self.default_augment!r}"
            )

    def _check_labels(self, split: str, x: torch.Tensor) -> None:
        y = getattr(self, f"y_{split}")
        if y is None or y.dim() != 1 or len(y) != len(x):
            shape = None if y is None else tuple(y.shape)
            raise DataError(f"dataset: {self.name}: y_{split} must be [{len(x)}], got {shape}")
        y = y.to(torch.int64)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise DataError(
                f"dataset: {self.name}: y_{split} must lie in [0, {len(self.classes)}) "
                f"(one per class name), got [{int(y.min())}, {int(y.max())}]"
            )
        setattr(self, f"y_{split}", y.contiguous())

    def _check_masks(self, split: str, x: torch.Tensor) -> None:
        m = getattr(self, f"m_{split}")
        if m.dtype != torch.uint8 or m.dim() != 3 or m.shape != (len(x), *x.shape[2:]):
            raise DataError(
                f"dataset: {self.name}: m_{split} must be uint8 [N, H, W] = "
                f"{[len(x), *x.shape[2:]]} (one mask per image), got {m.dtype} {tuple(m.shape)}"
            )
        values = torch.unique(m)
        bad = values[(values >= len(self.classes)) & (values != IGNORE)]
        if len(bad):
            raise DataError(
                f"dataset: {self.name}: m_{split} must hold class ids in [0, {len(self.classes)}) "
                f"(one per class name) or {IGNORE} (ignore), got {bad.tolist()}"
            )
        setattr(self, f"m_{split}", m.contiguous())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.image_hw
        return (
            f"ImageData({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"images={c}x{h}x{w}, task={self.task}, classes={self.num_classes}, "
            f"default_augment={self.default_augment!r})"
        )


Loader = Callable[[str, bool, "int | None"], ImageData]
DATASETS: Registry[Loader] = Registry("dataset", "dataset")


def list_datasets() -> list[str]:
    """Registered dataset names, then the two path forms ``npz:PATH`` and ``folder:PATH``."""
    return DATASETS.names() + [NPZ_PREFIX + "PATH", FOLDER_PREFIX + "PATH"]


def load_dataset(
    name: str, data_dir: str = "data", download: bool = False, image_size: int | None = None
) -> ImageData:
    """Load a dataset by name (see the module docstring for the names).

    Args:
        name: a registered name, ``npz:PATH`` or ``folder:PATH`` (PATH relative to the cwd).
        data_dir: where torchvision datasets live and where ``.pal-cache/`` is written.
        download: let torchvision datasets download into ``data_dir`` when missing.
        image_size: when set, every image (train and test) is resized to
            ``image_size x image_size`` (bilinear, antialiased).

    Returns:
        :class:`ImageData` with uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels.
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"dataset: expected a dataset name, got {name!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4
    ):
        raise DataError(f"image_size: must be an integer >= 4 or null, got {image_size!r}")
    data_dir = str(data_dir)
    if name.startswith(NPZ_PREFIX):
        data = _load_npz(name, _path_part(name, NPZ_PREFIX))
    elif name.startswith(FOLDER_PREFIX):
        data = _load_folder(name, _path_part(name, FOLDER_PREFIX), data_dir, image_size)
    else:
        if name not in DATASETS:
            raise UnknownDatasetError(
                DATASETS.unknown_message(name)
                + f", or {NPZ_PREFIX}PATH (arrays in an .npz file) or {FOLDER_PREFIX}PATH"
                " (an image-folder tree with train/ and test/, or a .tar.gz of one)"
            )
        data = DATASETS.get(name)(data_dir, bool(download), image_size)
    if (
        image_size is not None
        and name not in KEEPS_ASPECT
        and data.image_hw != (image_size, image_size)
    ):
        data.x_train = resize_images(data.x_train, image_size)
        data.x_test = resize_images(data.x_test, image_size)
        if data.m_train is not None:
            data.m_train = resize_masks(data.m_train, (image_size, image_size))
            data.m_test = resize_masks(data.m_test, (image_size, image_size))
    return data


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


# ---------------------------------------------------------------------------------- built-ins
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


@DATASETS.register("cifar10")
def load_cifar10(data_dir: str, download: bool, image_size: int | None) -> ImageData:
    """torchvision CIFAR-10 under ``data_dir``: 50,000 / 10,000 RGB 32x32 images, 10 classes."""
    from torchvision.datasets import CIFAR10

    def split(train: bool) -> CIFAR10:
        return _torchvision(
            "CIFAR-10",
            data_dir,
            download,
            lambda: CIFAR10(data_dir, train=train, download=download),
        )

    train, test = split(True), split(False)
    return ImageData(
        name="cifar10",
        x_train=torch.from_numpy(train.data).permute(0, 3, 1, 2),  # [N, 32, 32, 3] -> NCHW
        y_train=torch.as_tensor(np.asarray(train.targets, dtype=np.int64)),
        x_test=torch.from_numpy(test.data).permute(0, 3, 1, 2),
        y_test=torch.as_tensor(np.asarray(test.targets, dtype=np.int64)),
        classes=list(train.classes),
        default_augment="crop_flip",
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
    cache = Path(data_dir) / CACHE_DIR / f"caltech101-{size}.npz"
    cached = _read_cache(cache)
    if cached is None:
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
        cached = {
            "x_train": x[train],
            "y_train": y[train],
            "x_test": x[test],
            "y_test": y[test],
            "classes": np.asarray(ds.categories),
        }
        _write_cache(cache, cached)
    return _from_arrays("caltech101", cached, default_augment="crop_flip")


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
    cache = Path(data_dir) / CACHE_DIR / f"cityscapes-{height}.npz"
    cached = _read_cache(cache)
    if cached is None:
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
        cached = {}
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
            cached[f"x_{key}"], cached[f"m_{key}"] = x, m
        cached["classes"] = np.asarray(
            [
                c.name
                for c in sorted(Cityscapes.classes, key=lambda c: c.train_id)
                if 0 <= c.train_id < 255
            ]
        )
        _write_cache(cache, cached)
    return _from_arrays("cityscapes", cached, default_augment="crop_flip")


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


# ------------------------------------------------------------------------------------- npz:PATH
def _load_npz(name: str, spec: str) -> ImageData:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"dataset: no such file {str(path)!r} (from {name!r})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"dataset: {str(path)!r} is not a valid .npz file ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"dataset: {str(path)!r} holds a single array, not an .npz archive of "
            "x_train, y_train, x_test, y_test"
        )
    with archive:
        segmentation = "m_train" in archive.files or "m_test" in archive.files
        required = ["x_train", "y_train", "x_test", "y_test"]
        if segmentation:
            required = ["x_train", "m_train", "x_test", "m_test"]
        missing = [k for k in required if k not in archive.files]
        if missing:
            raise DataError(
                f"dataset: {str(path)!r} lacks the arrays {missing}; an .npz dataset needs "
                "x_train, y_train, x_test, y_test (classification) or x_train, m_train, x_test, "
                f"m_test (segmentation), and optionally classes; it has {sorted(archive.files)}"
            )
        arrays = {}
        for key in required + (["classes"] if "classes" in archive.files else []):
            try:
                arrays[key] = archive[key]
            except (ValueError, OSError, zipfile.BadZipFile) as e:
                raise DataError(
                    f"dataset: cannot read {key!r} from {str(path)!r} ({e}); store plain numeric "
                    "arrays (and a str array for classes), not Python objects"
                ) from None
    if segmentation:
        for split in ("train", "test"):  # the image checks below take one label per image
            m = arrays[f"m_{split}"]
            if m.dtype != np.uint8 or m.ndim != 3:
                raise DataError(
                    f"dataset: m_{split} in {str(path)!r} must be uint8 [N, H, W] (class ids, "
                    f"{IGNORE} = ignore), got {m.dtype} {m.shape}"
                )
            arrays[f"y_{split}"] = np.zeros(len(m), np.int64)
        if "classes" not in arrays:
            valid = np.concatenate([m[m != IGNORE] for m in (arrays["m_train"], arrays["m_test"])])
            arrays["classes"] = np.asarray([str(i) for i in range(int(valid.max(initial=0)) + 1)])
    _check_arrays(arrays, f"in {str(path)!r}")
    if arrays["x_train"].ndim == 3:  # grey [N, H, W] -> [N, H, W, 1]
        arrays["x_train"] = arrays["x_train"][..., None]
        arrays["x_test"] = arrays["x_test"][..., None]
    return _from_arrays(name, arrays, default_augment="crop")


def _check_arrays(a: dict[str, np.ndarray], where: str) -> None:
    """Validate user arrays (x uint8 [N,H,W] or [N,H,W,C], y integer [N], optional classes [K])."""
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DataError(
                f"dataset: x_{split} {where} must be uint8 (pixel values 0..255), got {x.dtype}"
            )
        if x.ndim not in (3, 4):
            raise DataError(
                f"dataset: x_{split} {where} must have shape [N, H, W] (grey) or [N, H, W, C], "
                f"got shape {x.shape}"
            )
        if x.ndim == 4 and not 1 <= x.shape[3] <= 4:
            raise DataError(
                f"dataset: x_{split} {where} must be channels-last [N, H, W, C] with C in 1..4, "
                f"got shape {x.shape}"
            )
        if len(x) == 0:
            raise DataError(f"dataset: x_{split} {where} holds no images")
        if y.ndim != 1:
            raise DataError(f"dataset: y_{split} {where} must be 1-D [N], got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(
                f"dataset: x_{split} and y_{split} {where} differ in length "
                f"({len(x)} images, {len(y)} labels)"
            )
        if y.dtype.kind not in "iu":
            raise DataError(f"dataset: y_{split} {where} must hold integer labels, got {y.dtype}")
        if int(y.min()) < 0:
            raise DataError(
                f"dataset: y_{split} {where} must hold labels >= 0, got a negative label "
                f"{int(y.min())}"
            )
    train_shape, test_shape = a["x_train"].shape[1:], a["x_test"].shape[1:]
    if train_shape != test_shape:
        raise DataError(
            f"dataset: test images {where} are {test_shape} but train images are {train_shape} "
            "(H, W[, C]); both splits need one image shape"
        )
    n_labels = int(max(a["y_train"].max(), a["y_test"].max())) + 1
    if "classes" in a:
        classes = a["classes"]
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(
                f"dataset: classes {where} must be a 1-D str array of class names, "
                f"got {classes.dtype} {classes.shape}"
            )
        if len(classes) < n_labels:
            raise DataError(
                f"dataset: classes {where} names {len(classes)} classes but the labels go up to "
                f"{n_labels - 1}, so at least {n_labels} names are needed"
            )
        if classes.dtype.kind == "S":
            a["classes"] = np.char.decode(classes, "utf-8")
    else:
        a["classes"] = np.asarray([str(i) for i in range(n_labels)])


def _from_arrays(name: str, a: dict[str, np.ndarray], default_augment: str) -> ImageData:
    """Build :class:`ImageData` from channels-last uint8 ``[N, H, W, C]`` arrays, with masks
    ``m_train``/``m_test`` uint8 ``[N, H, W]`` when ``a`` has them (then ``y_*`` are unused)."""

    def nchw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def tensor(key: str, dtype) -> torch.Tensor | None:
        return torch.from_numpy(np.ascontiguousarray(a[key], dtype=dtype)) if key in a else None

    masks = "m_train" in a
    return ImageData(
        name=name,
        x_train=nchw(a["x_train"]),
        y_train=None if masks else tensor("y_train", np.int64),
        x_test=nchw(a["x_test"]),
        y_test=None if masks else tensor("y_test", np.int64),
        classes=[str(c) for c in a["classes"]],
        default_augment=default_augment,
        m_train=tensor("m_train", np.uint8),
        m_test=tensor("m_test", np.uint8),
    )


# ---------------------------------------------------------------------------------- folder:PATH
def _load_folder(name: str, spec: str, data_dir: str, image_size: int | None) -> ImageData:
    """Load ``folder:PATH`` (a tree or a .tar.gz of one), decoding once per cache key.

    The key is the absolute path and ``image_size`` plus, for an archive, its mtime and size, for
    a tree, the mtimes of PATH, train/, test/ and the class folders (they change when files are
    added, removed or renamed; a file overwritten in place under the same name is not noticed).
    """
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise DataError(f"dataset: no such folder or archive {str(path)!r} (from {name!r})")
    cache_dir = Path(data_dir) / CACHE_DIR
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise DataError(
                f"dataset: {name!r} must name a folder or a .tar.gz/.tgz archive of one, "
                f"got the file {str(path)!r}"
            )
        stat = path.stat()
        key = [str(path), stat.st_mtime_ns, stat.st_size, image_size]
        cache = cache_dir / f"folder-{_slug(path)}-{_digest(key)}.npz"
        arrays = _read_cache(cache)
        if arrays is None:
            root = _find_tree_root(_extract_once(path, cache_dir), path)
            arrays = _decode_tree(root, image_size)
            _write_cache(cache, arrays)
    else:
        train_dir, test_dir = _tree_dirs(path, path)
        # directory mtimes change when entries are added or removed: a cheap staleness check
        dirs = [path, train_dir, test_dir, *_class_dirs(train_dir), *_class_dirs(test_dir)]
        key = [str(path), image_size, *[(str(d), d.stat().st_mtime_ns) for d in dirs]]
        cache = cache_dir / f"folder-{_slug(path)}-{_digest(key)}.npz"
        arrays = _read_cache(cache)
        if arrays is None:
            arrays = _decode_tree(path, image_size)
            _write_cache(cache, arrays)
    channels = arrays["x_train"].shape[3]
    return _from_arrays(name, arrays, default_augment="crop_flip" if channels == 3 else "crop")


def _tree_dirs(root: Path, shown: Path) -> tuple[Path, Path]:
    missing = [d for d in ("train", "test") if not (root / d).is_dir()]
    if missing:
        raise DataError(
            f"dataset: {str(shown)!r} has no {' or '.join(m + '/' for m in missing)} folder; "
            "an image-folder dataset is laid out as train/<class>/*.png and test/<class>/*.png"
        )
    return root / "train", root / "test"


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(
        (Path(e.path) for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")),
        key=lambda p: p.name,
    )


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        e.name
        for e in os.scandir(class_dir)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
        raise DataError(
            f"dataset: class folder {str(class_dir)!r} holds no images "
            f"(looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return [class_dir / f for f in files]


def _decode_tree(root: Path, image_size: int | None) -> dict[str, np.ndarray]:
    """Decode ``root/{train,test}/<class>/*`` into channels-last uint8 arrays and int64 labels."""
    train_dir, test_dir = _tree_dirs(root, root)
    class_dirs = _class_dirs(train_dir)
    if not class_dirs:
        raise DataError(
            f"dataset: {str(train_dir)!r} has no class folders; put each class's images in "
            "train/<class name>/"
        )
    classes = [d.name for d in class_dirs]
    test_dirs = _class_dirs(test_dir)
    extra = sorted({d.name for d in test_dirs} - set(classes))
    if extra:
        raise DataError(
            f"dataset: {str(test_dir)!r} has class folders that train/ lacks: {extra}; "
            f"the classes are the folders of train/: {classes}"
        )
    if not test_dirs:
        raise DataError(f"dataset: {str(test_dir)!r} has no class folders")
    files: dict[str, list[Path]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, dirs in (("train", class_dirs), ("test", test_dirs)):
        per_class = [_image_files(d) for d in dirs]
        files[split] = [f for fs in per_class for f in fs]
        labels[split] = np.repeat(
            np.asarray([classes.index(d.name) for d in dirs], dtype=np.int64),
            [len(fs) for fs in per_class],
        )
    images = {split: [_read_image(f, image_size) for f in files[split]] for split in files}
    everything = images["train"] + images["test"]
    sizes = Counter(im.shape[:2] for im in everything)
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} ({n} images)" for (h, w), n in sizes.most_common(5))
        raise DataError(
            f"image_size: the images under {str(root)!r} differ in size (H x W: {found}"
            f"{', ...' if len(sizes) > 5 else ''}); set image_size to resize them all to "
            "image_size x image_size"
        )
    # one channel count for the whole dataset: grey only if every image is grey
    channels = 1 if all(im.ndim == 2 for im in everything) else 3
    (h, w), out = next(iter(sizes)), {}
    for split, ims in images.items():
        x = np.empty((len(ims), h, w, channels), dtype=np.uint8)
        for i, im in enumerate(ims):  # one-time assembly of the decoded files
            x[i] = im[..., None] if im.ndim == 2 else im
        out[f"x_{split}"] = x
        out[f"y_{split}"] = labels[split]
    out["classes"] = np.asarray(classes)
    return out


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    """Decode one file to uint8 ``[H, W]`` (grey) or ``[H, W, 3]``, resized when asked."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"dataset: cannot decode image {str(path)!r} ({e})") from None


def _extract_once(archive: Path, cache_dir: Path) -> Path:
    """Extract ``archive`` into ``cache_dir`` unless an earlier call did; returns the folder."""
    stat = archive.stat()
    dest = cache_dir / f"extracted-{_slug(archive)}-{_digest([str(archive), stat.st_mtime_ns])}"
    if dest.is_dir():
        return dest
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # extract beside the destination and rename, so an interrupted run leaves no half tree
        tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=cache_dir))
    except OSError as e:
        raise DataError(
            f"data_dir: cannot write the extraction cache {str(cache_dir)!r} ({e})"
        ) from None
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, dest)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir():  # a concurrent run finished first
            return dest
        raise DataError(f"dataset: cannot extract {str(archive)!r} ({e})") from None
    return dest


def _find_tree_root(extracted: Path, archive: Path) -> Path:
    if (extracted / "train").is_dir() or (extracted / "test").is_dir():
        return extracted
    tops = [
        Path(e.path)
        for e in os.scandir(extracted)
        if e.is_dir() and not e.name.startswith(".") and e.name != "__MACOSX"
    ]
    if len(tops) == 1 and ((tops[0] / "train").is_dir() or (tops[0] / "test").is_dir()):
        return tops[0]
    raise DataError(
        f"dataset: archive {str(archive)!r} holds no train/ and test/ folders, neither at its top "
        "nor under one top-level folder"
    )


# -------------------------------------------------------------------------------------- helpers
def stratified_split(
    labels: np.ndarray, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified train/test split of int labels ``[N]``.

    Each class gives its share of ``n_test`` (largest remainder, so the shares add up exactly),
    picked with ``default_rng(seed)``. Returns sorted index arrays ``(train [N - n_test],
    test [n_test])``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_test / len(labels))
    take = np.floor(quota).astype(np.int64)
    short = n_test - int(take.sum())
    # stable sort so ties go to the lower class id, independent of numpy's sort kind
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[:k]
            for c, k in zip(classes, take, strict=True)
        ]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _path_part(name: str, prefix: str) -> str:
    spec = name[len(prefix) :]
    if not spec:
        raise DataError(f"dataset: {prefix}PATH needs a path after {prefix!r}, got {name!r}")
    return spec


def _slug(path: Path) -> str:
    stem = path.name.removesuffix(".tar.gz").removesuffix(".tgz") or "root"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]


def _digest(key: Sequence) -> str:
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays uncompressed (loads in a fraction of a second); a failure only warns."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write beside the target and rename, so a reader never sees a half-written file
        fd, tmp = tempfile.mkstemp(prefix=".writing-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(
            f"data_dir: could not write the dataset cache {str(path)!r} ({e})", stacklevel=3
        )
