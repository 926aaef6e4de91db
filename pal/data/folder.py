"""The ``folder:PATH`` path form: an image-folder tree, or a ``.tar.gz``/``.tgz`` of one.

The tree is ``PATH/train/<class>/*.png|jpg|...`` and ``PATH/test/<class>/...``; the classes are
the folders of ``train/`` (sorted by name). An archive is extracted once into
``<data_dir>/.pal-cache/`` (its tree at the top or under one top-level folder). The decoded arrays
are cached there too (:mod:`pal.data.cache`), so the files are decoded once per cache key. Images
of different sizes need ``image_size``; a dataset is grey only when every image is.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from pal.data.arrays import from_arrays
from pal.data.cache import CACHE_DIR, cached, digest, slug
from pal.data.decode import read_image, stack_images
from pal.data.image_data import DataError, ImageData
from pal.data.registry import register_prefix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@register_prefix("folder:", "an image-folder tree with train/ and test/, or a .tar.gz of one")
def load_folder(name: str, spec: str, data_dir: str, image_size: int | None) -> ImageData:
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
        cache = cache_dir / f"folder-{slug(path)}-{digest(key)}"
        arrays = cached(
            cache,
            lambda: _decode_tree(_find_tree_root(_extract_once(path, cache_dir), path), image_size),
        )
    else:
        train_dir, test_dir = _tree_dirs(path, path)
        # directory mtimes change when entries are added or removed: a cheap staleness check
        dirs = [path, train_dir, test_dir, *_class_dirs(train_dir), *_class_dirs(test_dir)]
        key = [str(path), image_size, *[(str(d), d.stat().st_mtime_ns) for d in dirs]]
        cache = cache_dir / f"folder-{slug(path)}-{digest(key)}"
        arrays = cached(cache, lambda: _decode_tree(path, image_size))
    channels = arrays["x_train"].shape[3]
    return from_arrays(name, arrays, default_augment="crop_flip" if channels == 3 else "crop")


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
    images = {split: [read_image(f, image_size) for f in files[split]] for split in files}
    x = stack_images(images, f"the images under {str(root)!r}")
    out = {f"x_{split}": x[split] for split in x} | {f"y_{split}": labels[split] for split in x}
    out["classes"] = np.asarray(classes)
    return out


def _extract_once(archive: Path, cache_dir: Path) -> Path:
    """Extract ``archive`` into ``cache_dir`` unless an earlier call did; returns the folder."""
    stat = archive.stat()
    dest = cache_dir / f"extracted-{slug(archive)}-{digest([str(archive), stat.st_mtime_ns])}"
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
