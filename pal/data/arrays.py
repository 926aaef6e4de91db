"""From numpy arrays to :class:`ImageData`: checking user arrays and converting channels-last.

Shared by the loaders that hold their data as channels-last arrays: ``npz:PATH`` (checked with
:func:`check_arrays`, the user wrote them), ``folder:PATH``, ``manifest:PATH`` and the cached
torchvision loaders (``caltech101``, ``cityscapes``), which all build their :class:`ImageData`
with :func:`from_arrays`.
"""

from __future__ import annotations

import numpy as np
import torch

from pal.data.image_data import DataError, ImageData


def check_arrays(a: dict[str, np.ndarray], where: str) -> None:
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


def from_arrays(name: str, a: dict[str, np.ndarray], default_augment: str) -> ImageData:
    """Build :class:`ImageData` from channels-last uint8 ``[N, H, W, C]`` arrays, with masks
    ``m_train``/``m_test`` uint8 ``[N, H, W]`` when ``a`` has them (then ``y_*`` are unused),
    and the image ids ``ids_train``/``ids_test`` (str ``[N]``) and ``val_indices`` (int
    ``[V]``) when ``a`` has them."""

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
        ids_train=a["ids_train"].tolist() if "ids_train" in a else None,
        ids_test=a["ids_test"].tolist() if "ids_test" in a else None,
        val_indices=a["val_indices"].astype(np.int64) if "val_indices" in a else None,
    )
