"""The dataset contract: :class:`ImageData`, what every loader returns, and the data errors.

Images are uint8 ``[N, C, H, W]`` CPU tensors (the loop moves them to the device once and
normalises there), with an int64 label per image (classification) or a uint8 mask per image
(semantic segmentation). A training image nobody has labeled yet holds :data:`UNKNOWN_LABEL`.
Datasets read from files may name each image (``ids_train``, ``ids_test``) and declare their own
validation split (``val_indices``). :class:`ImageData` checks all of it when built, so a loader's
mistake is a :class:`DataError` naming the dataset, not a shape error deep in training.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import torch

from pal.config import AUGMENTS, ConfigError
from pal.registry import UnknownNameError
from pal.segmentation import IGNORE

__all__ = ["AUGMENTS", "UNKNOWN_LABEL", "DataError", "ImageData", "UnknownDatasetError"]

UNKNOWN_LABEL = -1
"""The label of a training image that nobody has labeled yet (``y_train`` only)."""


class DataError(ConfigError):
    """A dataset cannot be loaded as configured; the message names the config field."""


class UnknownDatasetError(DataError, UnknownNameError):
    """An unknown dataset name; also a ``KeyError`` like other unknown registry names."""


def row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` contiguous with the row-major strides of its shape, a size-1 dimension's included.

    A grey ``[N, 1, H, W]`` array transposed from NumPy's ``[N, H, W, 1]`` is contiguous with
    strides ``(HW, 1, W, 1)``: convolutions read that as channels-last and take another kernel
    than for the same images laid out ``(HW, HW, W, 1)``, which changes the last bits of the
    features. One layout for every loader keeps them the same wherever the images are rebuilt
    (a Ray Data actor rebuilds them row-major).
    """
    x = x.contiguous()
    strides, step = [], 1
    for size in reversed(x.shape):
        strides.append(step)
        step *= size
    if x.stride() == tuple(reversed(strides)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


@dataclasses.dataclass(repr=False)
class ImageData:
    """An image dataset as uint8 CPU tensors (the loop moves them to the device once): labels per
    image (classification) or a mask per image (semantic segmentation).

    Attributes:
        name: the dataset name as given to :func:`load_dataset`.
        x_train: uint8 ``[N, C, H, W]``, contiguous, row-major (:func:`row_major`).
        y_train: int64 ``[N]``, values in ``[0, num_classes)`` or :data:`UNKNOWN_LABEL` (not
            labeled yet); ``None`` for segmentation.
        x_test: uint8 ``[M, C, H, W]``, contiguous, same ``C, H, W`` as ``x_train`` (``M`` may
            be 0: no test split).
        y_test: int64 ``[M]``, values in ``[0, num_classes)``; ``None`` for segmentation.
        classes: class names, index = label (for segmentation: the mask values); empty only
            when no image has a label.
        default_augment: ``"none"``, ``"crop"`` or ``"crop_flip"``: what ``augment="auto"`` means
            for this data (digits and house numbers must not be flipped).
        m_train, m_test: segmentation masks, uint8 ``[N, H, W]`` / ``[M, H, W]``, values in
            ``[0, num_classes)`` or :data:`pal.segmentation.IGNORE` (255, not annotated);
            ``None`` for classification.
        ids_train, ids_test: one identity per image, unique over both splits (for files: the
            path the dataset names it by), or ``None`` for datasets whose images have none.
        val_indices: int64 ``[V]``, positions in ``x_train`` the dataset declares as its
            validation split (unique, every one labeled), or ``None``: the experiment draws
            ``val_size`` images from the training split instead.
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
    ids_train: list[str] | None = None
    ids_test: list[str] | None = None
    val_indices: np.ndarray | None = None

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
            setattr(self, f"x_{split}", row_major(x))
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
        self._check_ids()
        self._check_val_indices()

    def _check_labels(self, split: str, x: torch.Tensor) -> None:
        y = getattr(self, f"y_{split}")
        if y is None or y.dim() != 1 or len(y) != len(x):
            shape = None if y is None else tuple(y.shape)
            raise DataError(f"dataset: {self.name}: y_{split} must be [{len(x)}], got {shape}")
        y = y.to(torch.int64)
        # a training image may wait for its label; a test image is scored against its label
        known = y[y != UNKNOWN_LABEL] if split == "train" else y
        if len(known) and (int(known.min()) < 0 or int(known.max()) >= len(self.classes)):
            unknown = f" or {UNKNOWN_LABEL} (not labeled yet)" if split == "train" else ""
            raise DataError(
                f"dataset: {self.name}: y_{split} must lie in [0, {len(self.classes)}) "
                f"(one per class name){unknown}, got [{int(known.min())}, {int(known.max())}]"
            )
        setattr(self, f"y_{split}", y.contiguous())

    def _check_ids(self) -> None:
        if (self.ids_train is None) != (self.ids_test is None):
            raise DataError(f"dataset: {self.name}: give image ids for both splits or neither")
        if self.ids_train is None:
            return
        for split in ("train", "test"):
            ids = list(map(str, getattr(self, f"ids_{split}")))
            n = len(getattr(self, f"x_{split}"))
            if len(ids) != n:
                raise DataError(
                    f"dataset: {self.name}: ids_{split} must name each of the {n} images once, "
                    f"got {len(ids)} ids"
                )
            setattr(self, f"ids_{split}", ids)
        every = self.ids_train + self.ids_test
        if len(set(every)) != len(every):
            twice = sorted(i for i, n in Counter(every).items() if n > 1)
            raise DataError(
                f"dataset: {self.name}: image ids must be unique over train and test, "
                f"{len(twice)} repeat: {twice[:5]}{' ...' if len(twice) > 5 else ''}"
            )

    def _check_val_indices(self) -> None:
        if self.val_indices is None:
            return
        val = np.asarray(self.val_indices)
        if val.ndim != 1 or (len(val) and val.dtype.kind not in "iu"):
            raise DataError(
                f"dataset: {self.name}: val_indices must be 1-D integer positions in x_train, "
                f"got {val.dtype} {val.shape}"
            )
        val = val.astype(np.int64)
        n = len(self.x_train)
        if len(val) and (int(val.min()) < 0 or int(val.max()) >= n):
            raise DataError(
                f"dataset: {self.name}: val_indices must lie in [0, {n}) (positions in x_train), "
                f"got [{int(val.min())}, {int(val.max())}]"
            )
        if len(np.unique(val)) != len(val):
            raise DataError(f"dataset: {self.name}: val_indices must not repeat a position")
        if self.y_train is not None:
            unlabeled = val[self.y_train.numpy()[val] == UNKNOWN_LABEL]
            if len(unlabeled):
                raise DataError(
                    f"dataset: {self.name}: the validation images must be labeled, "
                    f"{len(unlabeled)} are not (x_train positions {unlabeled[:5].tolist()}"
                    f"{' ...' if len(unlabeled) > 5 else ''})"
                )
        self.val_indices = val

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
    def n_unknown(self) -> int:
        """Training images without a label (:data:`UNKNOWN_LABEL`); 0 for segmentation."""
        if self.y_train is None:
            return 0
        return int((self.y_train == UNKNOWN_LABEL).sum())

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
            f"default_augment={self.default_augment!r}"
            + (f", unlabeled={self.n_unknown}" if self.n_unknown else "")
            + (f", val={len(self.val_indices)}" if self.val_indices is not None else "")
            + ")"
        )
