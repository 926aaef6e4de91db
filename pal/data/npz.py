"""The ``npz:PATH`` path form: a user's own arrays in an ``.npz`` file.

Classification: ``x_train``, ``x_test`` uint8 ``[N, H, W]`` (grey) or ``[N, H, W, C]``,
``y_train``, ``y_test`` integer labels, optional ``classes`` (a str array, index = label).
Segmentation: ``m_train``, ``m_test`` uint8 ``[N, H, W]`` masks (class ids, 255 = not annotated)
instead of the labels. PATH is relative to the working directory; the file is read as it is, not
cached.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pal.data.arrays import check_arrays, from_arrays
from pal.data.image_data import DataError, ImageData
from pal.data.registry import register_prefix
from pal.segmentation import IGNORE


@register_prefix("npz:", "arrays in an .npz file")
def load_npz(name: str, spec: str, data_dir: str, image_size: int | None) -> ImageData:
    """Load ``npz:PATH`` (``spec`` is PATH); ``data_dir`` and ``image_size`` are not used here
    (:func:`pal.data.load_dataset` resizes afterwards)."""
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
    check_arrays(arrays, f"in {str(path)!r}")
    if arrays["x_train"].ndim == 3:  # grey [N, H, W] -> [N, H, W, 1]
        arrays["x_train"] = arrays["x_train"][..., None]
        arrays["x_test"] = arrays["x_test"][..., None]
    return from_arrays(name, arrays, default_augment="crop")
