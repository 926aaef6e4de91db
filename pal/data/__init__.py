"""Labelled image datasets, held as uint8 tensors on the CPU.

Every loader returns an :class:`ImageData` with images as uint8 ``[N, C, H, W]`` and labels as
int64 ``[N]`` (or masks uint8 ``[N, H, W]`` for segmentation); the experiment loop moves them to
the device once and normalises there. :func:`load_dataset` takes a registered name or a path form:

* ``digits``: scikit-learn's bundled 8x8 digits (no file, no network), the default dataset.
* ``digit_scenes``: segmentation scenes of two digits each, built from ``digits``.
* ``cifar10``, ``svhn``, ``caltech101``: torchvision datasets under ``data_dir``.
* ``cityscapes``: torchvision's Cityscapes (fine masks, 19 classes) under ``data_dir``.
* ``npz:PATH``: a user's own arrays in an ``.npz`` file (``x_train``, ``y_train``, ``x_test``,
  ``y_test``, optional ``classes``; or masks ``m_train``, ``m_test``).
* ``folder:PATH``: an image-folder tree ``PATH/{train,test}/<class>/*.png|jpg|...``, or a
  ``.tar.gz`` archive holding one.
* ``manifest:PATH``: image files listed in a CSV file (``path``, optional ``label`` and
  ``split`` columns); images keep their path as their id, may be unlabeled
  (:data:`UNKNOWN_LABEL`), and ``val`` rows are the dataset's own validation split.

Datasets without an official test split get a fixed stratified split drawn with
``numpy.random.default_rng(0)``: the split belongs to the dataset, not to an experiment, so runs
with different seeds are scored on the same test images. Decoding image files is slow, so decoded
arrays are cached under ``<data_dir>/.pal-cache/``, one ``.npy`` per array, and the images of a
cached dataset are that file's memory map: a pool bigger than the host's memory is read from disk
a batch at a time.

One concept per module:

* :mod:`pal.data.image_data`: :class:`ImageData`, the contract, and the errors.
* :mod:`pal.data.registry`: :data:`DATASETS` (names), :data:`PREFIXES` and
  :func:`register_prefix` (path forms), :func:`load_dataset`, :func:`absolute_dataset`.
* :mod:`pal.data.resize`: :func:`resize_images`, :func:`resize_masks`.
* :mod:`pal.data.split`: :func:`stratified_split`.
* :mod:`pal.data.digits`: ``digits`` and ``digit_scenes``.
* :mod:`pal.data.torchvision_sets`: ``cifar10``, ``svhn``, ``caltech101``, ``cityscapes``.
* :mod:`pal.data.arrays`: numpy arrays to :class:`ImageData` (checks, channels-last).
* :mod:`pal.data.npz`: ``npz:PATH``; :mod:`pal.data.folder`: ``folder:PATH``;
  :mod:`pal.data.manifest`: ``manifest:PATH``.
* :mod:`pal.data.decode`: image files to arrays (PIL), shared by ``folder:`` and ``manifest:``.
* :mod:`pal.data.cache`: the decode cache under ``<data_dir>/.pal-cache/``.

Importing this package registers every built-in name and path form.
"""

from __future__ import annotations

# isort: off
# registration; npz, folder, manifest: the order list_datasets and error messages show them in
from pal.data import digits, npz, folder, manifest, torchvision_sets  # noqa: F401

# isort: on
from pal.data.image_data import (
    AUGMENTS,
    UNKNOWN_LABEL,
    DataError,
    ImageData,
    UnknownDatasetError,
)
from pal.data.registry import (
    DATASETS,
    PREFIXES,
    absolute_dataset,
    list_datasets,
    load_dataset,
    register_prefix,
)
from pal.data.resize import resize_images, resize_masks
from pal.data.split import stratified_split

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "PREFIXES",
    "UNKNOWN_LABEL",
    "DataError",
    "ImageData",
    "UnknownDatasetError",
    "absolute_dataset",
    "list_datasets",
    "load_dataset",
    "register_prefix",
    "resize_images",
    "resize_masks",
    "stratified_split",
]
