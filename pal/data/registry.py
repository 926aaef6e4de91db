"""Loading a dataset by name: the name registry, the path-form (prefix) registry, and
:func:`load_dataset`, which dispatches to them and applies ``image_size``.

A dataset name is either a registered name (``digits``, ``cifar10``, ...), looked up in
:data:`DATASETS`, or a path form ``PREFIX:PATH`` (``npz:PATH``, ``folder:PATH``), looked up in
:data:`PREFIXES`. Adding a dataset is registering a loader in one of them::

    @DATASETS.register("mnist")
    def load_mnist(data_dir: str, download: bool, image_size: int | None) -> ImageData: ...


    @register_prefix("hdf5:", "images in an HDF5 file")
    def load_hdf5(name: str, path: str, data_dir: str, image_size: int | None) -> ImageData: ...

The built-in loaders register themselves when :mod:`pal.data` is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from pal.data.image_data import DataError, ImageData, UnknownDatasetError
from pal.data.resize import resize_images, resize_masks
from pal.registry import Registry

__all__ = [
    "DATASETS",
    "KEEPS_ASPECT",
    "PREFIXES",
    "Loader",
    "Prefix",
    "PrefixLoader",
    "absolute_dataset",
    "list_datasets",
    "load_dataset",
    "register_prefix",
]

# (data_dir, download, image_size) -> ImageData
Loader = Callable[[str, bool, "int | None"], ImageData]
# (name, path, data_dir, image_size) -> ImageData; name is the whole "PREFIX:PATH"
PrefixLoader = Callable[[str, str, str, "int | None"], ImageData]

DATASETS: Registry[Loader] = Registry("dataset", "dataset")

# names of loaders that read image_size as the height and keep the images' aspect ratio, so
# load_dataset does not squash their images to image_size x image_size; a loader adds its name
KEEPS_ASPECT: set[str] = set()


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A registered path form ``PREFIX:PATH``.

    Attributes:
        prefix: e.g. ``"npz:"``.
        load: the loader, called as ``load(name, path, data_dir, image_size)``.
        description: what PATH names, for the message on an unknown dataset name.
        local_path: PATH is a local file or folder, so :func:`absolute_dataset` makes it absolute
            (False for a path form whose PATH is not a file system path).
    """

    prefix: str
    load: PrefixLoader
    description: str
    local_path: bool = True


# prefix -> Prefix, in registration order (the order list_datasets shows them in)
PREFIXES: dict[str, Prefix] = {}


def register_prefix(
    prefix: str, description: str, *, local_path: bool = True
) -> Callable[[PrefixLoader], PrefixLoader]:
    """Register the loader of the path form ``PREFIX:PATH`` (a decorator).

    Args:
        prefix: the prefix, ending in ``":"``, e.g. ``"npz:"``.
        description: what PATH names, e.g. ``"arrays in an .npz file"``.
        local_path: PATH is a local file or folder (see :func:`absolute_dataset`).
    """
    if not prefix.endswith(":") or len(prefix) < 2:
        raise ValueError(f"a dataset prefix ends in ':', like 'npz:', got {prefix!r}")

    def add(load: PrefixLoader) -> PrefixLoader:
        if prefix in PREFIXES:
            raise ValueError(f"dataset prefix {prefix!r} is already registered")
        PREFIXES[prefix] = Prefix(prefix, load, description, local_path)
        return load

    return add


def _find_prefix(name: str) -> Prefix | None:
    """The registered path form ``name`` is written in (the longest matching prefix), if any."""
    matches = [p for p in PREFIXES.values() if name.startswith(p.prefix)]
    return max(matches, key=lambda p: len(p.prefix), default=None)


def list_datasets() -> list[str]:
    """Registered dataset names, then the path forms (``npz:PATH``, ``folder:PATH``)."""
    return DATASETS.names() + [prefix + "PATH" for prefix in PREFIXES]


def absolute_dataset(name: str) -> str:
    """``name`` with the PATH of a path form made absolute, so it means the same file from any
    working directory: ``npz:rel/x.npz`` -> ``npz:/abs/rel/x.npz`` (``~`` expanded). A
    registered name, a path form whose PATH is not local, and an empty PATH come back
    unchanged."""
    form = _find_prefix(name)
    path = name[len(form.prefix) :] if form is not None else ""
    if form is None or not form.local_path or not path:
        return name
    return form.prefix + str(Path(path).expanduser().resolve())


def load_dataset(
    name: str, data_dir: str = "data", download: bool = False, image_size: int | None = None
) -> ImageData:
    """Load a dataset by name (see :mod:`pal.data` for the names).

    Args:
        name: a registered name or a path form (``npz:PATH``, ``folder:PATH``,
            ``manifest:PATH``; PATH relative to the cwd).
        data_dir: where torchvision datasets live and where ``.pal-cache/`` is written.
        download: let torchvision datasets download into ``data_dir`` when missing.
        image_size: when set, every image (train and test) is resized to
            ``image_size x image_size`` (bilinear, antialiased).

    Returns:
        :class:`ImageData` with uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels
        (``manifest:PATH`` training images may be unlabeled:
        :data:`~pal.data.image_data.UNKNOWN_LABEL`).
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"dataset: expected a dataset name, got {name!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4
    ):
        raise DataError(f"image_size: must be an integer >= 4 or null, got {image_size!r}")
    data_dir = str(data_dir)
    form = _find_prefix(name)
    if form is not None:
        path = name[len(form.prefix) :]
        if not path:
            raise DataError(
                f"dataset: {form.prefix}PATH needs a path after {form.prefix!r}, got {name!r}"
            )
        data = form.load(name, path, data_dir, image_size)
    else:
        if name not in DATASETS:
            forms = " or ".join(f"{p.prefix}PATH ({p.description})" for p in PREFIXES.values())
            raise UnknownDatasetError(
                DATASETS.unknown_message(name) + (f", or {forms}" if forms else "")
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
