"""The ``manifest:PATH`` path form: image files listed in a CSV file, each keeping its path as its
identity, labeled or not yet.

PATH is a CSV file with a header row (UTF-8) and these columns, in any order:

* ``path`` (required): the image file, relative to the CSV file's folder or absolute; any format
  and size PIL reads.
* ``label`` (optional): the image's class name; empty (or no such column): nobody has labeled the
  image yet, its label is :data:`~pal.data.image_data.UNKNOWN_LABEL`.
* ``split`` (optional): ``pool`` (also when empty or absent), ``val`` or ``test``.

Other columns are ignored, and so are blank rows. ``pool`` and ``val`` rows form the training
split (the pool rows first, in manifest order, then the val rows), ``test`` rows the test split
(which may be empty). The val rows are the dataset's declared validation split
(``val_indices``); a manifest without val rows declares none, and an experiment draws
``val_size`` images from the pool instead. Val and test rows need a label. The classes are the
distinct non-empty labels over all rows, sorted as strings. An image's id (``ids_train``,
``ids_test``) is its path as the manifest writes it (surrounding spaces dropped), with ``/`` as
the separator. Two rows may not name the same file.

The files are decoded once and cached under ``<data_dir>/.pal-cache/``, keyed by the manifest's
absolute path, size and modification time and ``image_size``: editing the manifest decodes
again; an image file overwritten in place under the same name is not noticed. Images of
different sizes need ``image_size``; the dataset is grey only when every image is.

Errors name the manifest and list every offending row, numbered as a spreadsheet or an editor
shows them (the header is row 1).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np

from pal.data.arrays import from_arrays
from pal.data.cache import CACHE_DIR, cached, digest, slug
from pal.data.decode import read_image, stack_images
from pal.data.image_data import UNKNOWN_LABEL, DataError, ImageData
from pal.data.registry import register_prefix

__all__ = ["SPLITS", "ManifestRow", "load_manifest", "read_manifest"]

SPLITS = ("pool", "val", "test")
_MAX_ROWS_SHOWN = 10


@register_prefix("manifest:", "a CSV file of image paths with optional label and split columns")
def load_manifest(name: str, spec: str, data_dir: str, image_size: int | None) -> ImageData:
    """Load ``manifest:PATH`` (``spec`` is PATH), decoding the files once per cache key (the
    manifest's absolute path, size and mtime, and ``image_size``)."""
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"dataset: no such manifest file {str(path)!r} (from {name!r})")
    stat = path.stat()
    key = [str(path), stat.st_size, stat.st_mtime_ns, image_size]
    cache = Path(data_dir) / CACHE_DIR / f"manifest-{slug(path)}-{digest(key)}"
    arrays = cached(cache, lambda: _decode(path, image_size))
    channels = arrays["x_train"].shape[3]
    return from_arrays(name, arrays, default_augment="crop_flip" if channels == 3 else "crop")


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One checked row of a manifest (:func:`read_manifest`)."""

    number: int  # as a spreadsheet shows it: the header is row 1
    path: str  # the path as written, with / separators: the image's identity
    file: Path
    label: str  # "" for unknown
    split: str


def _rows_text(numbers: list[int]) -> str:
    """``row 4`` / ``rows 4, 9, 12`` / ``rows 1, ..., 10 and 5 more``."""
    text = ("row " if len(numbers) == 1 else "rows ") + ", ".join(
        str(n) for n in numbers[:_MAX_ROWS_SHOWN]
    )
    more = len(numbers) - _MAX_ROWS_SHOWN
    return text + f" and {more} more" if more > 0 else text


def _fail(manifest: Path, problems: list[tuple[str, list[int]]]) -> DataError:
    found = "; ".join(f"{_rows_text(rows)}: {what}" for what, rows in problems if rows)
    return DataError(f"dataset: manifest {str(manifest)!r}: {found} (row 1 is the header)")


def read_manifest(manifest: Path) -> list[ManifestRow]:
    """The manifest's rows, checked: every problem of every row in one :class:`DataError`."""
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as fh:
            records = _numbered(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"dataset: cannot read the manifest {str(manifest)!r} ({e})") from None
    if not records:
        raise DataError(f"dataset: manifest {str(manifest)!r} is empty; it needs a header row")
    header = [h.strip().lower() for h in records[0][1]]
    if "path" not in header:
        raise DataError(
            f"dataset: manifest {str(manifest)!r} has no 'path' column in its header row "
            f"(found {records[0][1]}); columns are path (required), label and split (optional)"
        )
    column = {c: header.index(c) for c in ("path", "label", "split") if c in header}

    def cell(cells: list[str], c: str) -> str:
        i = column.get(c)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    rows: list[ManifestRow] = []
    no_path, bad_split, unlabeled, repeated, missing = [], [], [], [], []
    bad_values: list[str] = []
    first_row: dict[str, int] = {}
    for number, cells in records[1:]:
        if not any(c.strip() for c in cells):
            continue  # a blank row
        row_id = cell(cells, "path").replace("\\", "/")
        label, split = cell(cells, "label"), cell(cells, "split").lower() or "pool"
        if not row_id:
            no_path.append(number)
            continue
        if split not in SPLITS:
            bad_split.append(number)
            if repr(split) not in bad_values:
                bad_values.append(repr(split))
        elif split != "pool" and not label:
            unlabeled.append(number)
        file = Path(os.path.normpath(manifest.parent / row_id))
        if str(file) in first_row:
            repeated.append(number)
        else:
            first_row[str(file)] = number
            if not file.is_file():
                missing.append(number)
        rows.append(ManifestRow(number, row_id, file, label, split))
    problems = [
        ("no path", no_path),
        (f"split {', '.join(bad_values)} is none of {', '.join(SPLITS)}", bad_split),
        ("a val or test row needs a label", unlabeled),
        ("the same file as an earlier row", repeated),
        ("no such file", missing),
    ]
    if any(numbers for _, numbers in problems):
        raise _fail(manifest, problems)
    if not any(r.split != "test" for r in rows):
        raise DataError(
            f"dataset: manifest {str(manifest)!r} has no pool or val rows; the training split "
            "needs at least one image"
        )
    return rows


def _numbered(reader) -> list[tuple[int, list[str]]]:
    """``(row number, cells)`` per record; the number is the line the record starts on."""
    out, start = [], 1
    for cells in reader:
        out.append((start, cells))
        start = reader.line_num + 1
    return out


def _decode(manifest: Path, image_size: int | None) -> dict[str, np.ndarray]:
    """Decode the manifest's files into the arrays :func:`~pal.data.arrays.from_arrays` takes,
    with ``ids_train``, ``ids_test`` and (when there are val rows) ``val_indices``."""
    rows = read_manifest(manifest)
    splits = {
        "train": [r for r in rows if r.split == "pool"] + [r for r in rows if r.split == "val"],
        "test": [r for r in rows if r.split == "test"],
    }
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    undecodable: list[int] = []
    first_error = ""
    for split, split_rows in splits.items():
        for row in split_rows:  # the one-time decode
            try:
                images[split].append(read_image(row.file, image_size))
            except DataError as e:
                undecodable.append(row.number)
                first_error = first_error or str(e).removeprefix("dataset: ")
    if undecodable:
        undecodable.sort()
        raise _fail(manifest, [(f"not an image PIL decodes (first: {first_error})", undecodable)])
    x = stack_images(images, f"the images of manifest {str(manifest)!r}")
    classes = sorted({r.label for r in rows if r.label})
    class_id = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, split_rows in splits.items():
        out[f"x_{split}"] = x[split]
        out[f"y_{split}"] = np.asarray(
            [class_id.get(r.label, UNKNOWN_LABEL) for r in split_rows], dtype=np.int64
        )
        out[f"ids_{split}"] = np.asarray([r.path for r in split_rows], dtype=str)
    out["classes"] = np.asarray(classes, dtype=str)
    n_val = sum(r.split == "val" for r in rows)
    if n_val:
        n_train = len(splits["train"])
        out["val_indices"] = np.arange(n_train - n_val, n_train, dtype=np.int64)
    return out
