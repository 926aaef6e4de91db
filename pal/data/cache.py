"""The decode cache: decoded arrays saved as ``.npy`` files under ``<data_dir>/.pal-cache/``, and
read back as memory maps.

Decoding image files is slow (CIFAR-10 as JPEGs is 60,000 files), so loaders that decode files
(``folder:PATH``, ``manifest:PATH``, ``caltech101``, ``cityscapes``) save the arrays once, one
``.npy`` per array in a folder named by the cache key (:func:`digest`: whatever would change the
result). Images are stored channels-first, the layout pal trains on, so the ``uint8 [N, C, H, W]``
tensors of :class:`~pal.data.image_data.ImageData` are the memory map itself, not a copy: a
pool larger than the host's memory is paged in from disk a batch at a time when it is streamed
(:mod:`pal.placement`), and the operating system may drop those pages again. A damaged cache is
rebuilt, and a cache that cannot be written only warns (the decoded arrays are used from memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

CACHE_DIR = ".pal-cache"
MAPPED_NDIM = 3
"""Arrays of at least this many dimensions (images ``[N, H, W, C]``, masks ``[N, H, W]``) are
memory-mapped when read; labels, ids and class names are read whole."""


def slug(path: Path) -> str:
    """A short file-name-safe stem of ``path`` for cache names (``.tar.gz``/``.tgz`` dropped)."""
    stem = path.name.removesuffix(".tar.gz").removesuffix(".tgz") or "root"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]


def digest(key: Sequence) -> str:
    """16 hex digits of SHA-1 over ``key`` as JSON: the part of a cache name that changes with
    whatever would change the decoded arrays."""
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached in the folder ``path``, or ``None`` (absent or damaged: rebuild it).

    Images come back channels-last ``uint8 [N, H, W, C]`` as loaders build them, but as a
    transposed view of a channels-first memory map (``.transpose(0, 3, 1, 2)`` is contiguous
    again, no copy); masks ``[N, H, W]`` are memory maps too. The maps are copy-on-write: writing
    to them never changes the file.
    """
    files = sorted(path.glob("*.npy")) if path.is_dir() else []
    if not files:
        return None
    arrays = {}
    try:
        for file in files:
            a = np.load(file, mmap_mode="c", allow_pickle=False)
            if a.ndim < MAPPED_NDIM or a.size == 0:
                a = np.array(a)  # small arrays (and empty ones) live in memory
            arrays[file.stem] = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
    except (OSError, ValueError, EOFError):
        return None  # a damaged cache is rebuilt
    return arrays


def cached(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached in the folder ``path``; when absent or damaged, ``build()`` them, cache
    them and read them back memory-mapped (:func:`read_cache`), so the first load and every
    later one hold the same kind of arrays."""
    arrays = read_cache(path)
    if arrays is None:
        arrays = build()
        if write_cache(path, arrays):
            arrays = read_cache(path) or arrays
    return arrays


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Save ``arrays`` as the folder ``path`` (one ``.npy`` each, images channels-first); a
    failure only warns and returns ``False``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written beside the target and renamed, so a reader never sees a half-written cache
        tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=path.parent))
        for key, a in arrays.items():
            np.save(tmp / f"{key}.npy", a.transpose(0, 3, 1, 2) if a.ndim == 4 else a)
        if path.exists():  # a damaged cache: readers that mapped its files keep them
            shutil.rmtree(path)
        os.replace(tmp, path)
        # the single-file cache of earlier pal versions under the same key
        path.with_name(path.name + ".npz").unlink(missing_ok=True)
        return True
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(
            f"data_dir: could not write the dataset cache {str(path)!r} ({e})", stacklevel=3
        )
        return False
