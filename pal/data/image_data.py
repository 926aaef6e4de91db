"""The dataset contract: :class:`ImageData`, what every loader returns, and the data errors.

Images are uint8 ``[N, C, H, W]`` CPU tensors (the loop moves them to the device once and
normalises there), with an int64 label per image (classification) or a uint8 mask per image
(semantic segmentation). :class:`ImageData` checks all of it when built, so a loader's mistake is
a :class:`DataError` naming the dataset, not a shape error deep in training.
"""

from __future__ import annotations

import dataclasses

import torch

from pal.config import ConfigError
from pal.registry import UnknownNameError
from pal.segmentation import IGNORE

__all__ = ["AUGMENTS", "DataError", "ImageData", "UnknownDatasetError"]

AUGMENTS = ("none", "crop", "crop_flip")


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
