"""The decode cache: decoded arrays saved as ``.npz`` under ``<data_dir>/.pal-cache/``.

Decoding image files is slow (CIFAR-10 as JPEGs is 60,000 files), so loaders that decode files
(``folder:PATH``, ``caltech101``, ``cityscapes``) save the arrays once and load them in a fraction
of a second afterwards. The file name carries a key that covers what would change the result
(:func:`digest`); a damaged file is rebuilt, and a cache that cannot be written only warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

CACHE_DIR = ".pal-cache"


def slug(path: Path) -> str:
    """A short file-name-safe stem of ``path`` for cache names (``.tar.gz``/``.tgz`` dropped)."""
    stem = path.name.removesuffix(".tar.gz").removesuffix(".tgz") or "root"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]


def digest(key: Sequence) -> str:
    """16 hex digits of SHA-1 over ``key`` as JSON: the part of a cache name that changes with
    whatever would change the decoded arrays."""
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path``, or ``None`` (absent or damaged: rebuild it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt


def cached(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached at ``path``; when absent or damaged, ``build()`` them and cache them."""
    arrays = read_cache(path)
    if arrays is None:
        arrays = build()
        write_cache(path, arrays)
    return arrays


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
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
