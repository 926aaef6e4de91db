"""Dataset loaders: shapes, exact pixels, fixed splits, caching and clear errors."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal.config import ConfigError
from pal.data import (
    DataError,
    ImageData,
    list_datasets,
    load_dataset,
    resize_images,
    stratified_split,
)
from pal.registry import UnknownNameError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------ digits
def test_digits_shapes_and_fixed_split(tmp_path):
    a = load_dataset("digits", data_dir=str(tmp_path))
    b = load_dataset("digits", data_dir=str(tmp_path))
    assert isinstance(a, ImageData)
    assert a.x_train.shape == (1300, 1, 8, 8) and a.x_test.shape == (497, 1, 8, 8)
    assert a.x_train.dtype == torch.uint8 and a.y_train.dtype == torch.int64
    assert a.x_train.is_contiguous() and a.x_test.is_contiguous()
    assert int(a.x_train.max()) == 255 and int(a.x_train.min()) == 0
    assert a.classes == [str(i) for i in range(10)] and a.num_classes == 10
    assert a.channels == 1 and a.image_hw == (8, 8) and a.default_augment == "crop"
    for y in (a.y_train, a.y_test):
        assert set(y.tolist()) == set(range(10))
    assert a.y_test.bincount().min() >= 45  # about 50 test images per class
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_digits_image_size_resizes_both_splits(tmp_path):
    d = load_dataset("digits", data_dir=str(tmp_path), image_size=16)
    assert d.x_train.shape == (1300, 1, 16, 16) and d.x_test.shape == (497, 1, 16, 16)
    assert d.x_train.dtype == torch.uint8 and d.x_train.is_contiguous()


def test_stratified_split_exact_and_disjoint():
    y = np.repeat(np.arange(3), [10, 20, 31])
    train, test = stratified_split(y, 12)
    assert len(test) == 12 and len(train) == 49
    assert not set(train) & set(test)
    assert np.bincount(y[test]).tolist() == [2, 4, 6]


def test_resize_images_keeps_constant_images():
    x = torch.full((5, 3, 10, 10), 77, dtype=torch.uint8)
    out = resize_images(x, 4)
    assert out.shape == (5, 3, 4, 4) and out.dtype == torch.uint8
    assert bool((out == 77).all())
    assert resize_images(x, 10) is x


# --------------------------------------------------------------------------------- registry
def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(
        DataError, match=r"dataset: unknown dataset 'cifar'.*digits.*npz:PATH.*folder:PATH"
    ):
        load_dataset("cifar", data_dir=str(tmp_path))
    with pytest.raises(UnknownNameError):  # still a KeyError like other registry lookups
        load_dataset("cifar", data_dir=str(tmp_path))
    assert issubclass(DataError, ConfigError)


def test_list_datasets():
    names = list_datasets()
    assert {"digits", "cifar10", "svhn", "caltech101"} <= set(names)
    assert names[-3:] == ["npz:PATH", "folder:PATH", "manifest:PATH"]


def test_a_registered_prefix_is_a_dataset_path_form(tmp_path, monkeypatch):
    import pal
    from pal.data import PREFIXES, absolute_dataset, register_prefix

    def tiny(name, path, data_dir, image_size):
        x = torch.full((4, 1, 6, 6), int(path), dtype=torch.uint8)
        y = torch.tensor([0, 1, 0, 1])
        return ImageData(name, x, y, x[:2].clone(), y[:2].clone(), ["a", "b"], "crop")

    register_prefix("mem:", "a test's tensors", local_path=False)(tiny)
    try:
        data = pal.load_dataset("mem:7", data_dir=str(tmp_path), image_size=8)
        assert data.name == "mem:7" and data.image_hw == (8, 8)  # load_dataset resized it
        assert bool((data.x_train == 7).all()) and data.y_test.tolist() == [0, 1]
        assert list_datasets()[-2:] == ["manifest:PATH", "mem:PATH"]
        with pytest.raises(DataError, match=r"or mem:PATH \(a test's tensors\)"):
            load_dataset("cifar", data_dir=str(tmp_path))
        with pytest.raises(DataError, match=r"mem:PATH needs a path after 'mem:'"):
            load_dataset("mem:", data_dir=str(tmp_path))
        with pytest.raises(ValueError, match="already registered"):
            register_prefix("mem:", "again")(tiny)
        assert absolute_dataset("mem:7") == "mem:7"  # not a file path: left alone
    finally:
        PREFIXES.pop("mem:", None)
    base = tmp_path.resolve()
    monkeypatch.chdir(base)
    monkeypatch.setenv("HOME", str(base / "home"))
    assert absolute_dataset("npz:rel/x.npz") == f"npz:{base / 'rel' / 'x.npz'}"
    assert absolute_dataset("folder:~/imgs") == f"folder:{base / 'home' / 'imgs'}"
    assert absolute_dataset("npz:/abs/x.npz") == "npz:/abs/x.npz"
    assert absolute_dataset("digits") == "digits"


def test_bad_image_size(tmp_path):
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", data_dir=str(tmp_path), image_size=0)


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist", "svhn", "caltech101"])
def test_torchvision_missing_without_download(tmp_path, name):
    with pytest.raises(DataError, match=r"data_dir: .*not found.*download=true"):
        load_dataset(name, data_dir=str(tmp_path), download=False)


def _idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an IDX file, the format of the MNIST family."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_exact_pixels_labels_and_classes(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in [("train", 6), ("t10k", 3)]
    }
    y = {"train": np.array([0, 9, 3, 3, 5, 1]), "t10k": np.array([8, 2, 7])}
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", x[split])
        _idx(raw / f"{split}-labels-idx1-ubyte", y[split])
    data = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(x["train"]))
    assert torch.equal(data.x_test[:, 0], torch.from_numpy(x["t10k"]))
    assert data.y_train.tolist() == y["train"].tolist() and data.y_train.dtype == torch.int64
    assert data.y_test.tolist() == [8, 2, 7]
    assert data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"


# ------------------------------------------------------------------------------------- npz
def _arrays(rgb: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = (7, 5, 6, 3) if rgb else (7, 5, 6)
    test_shape = (4, *shape[1:])
    return {
        "x_train": rng.integers(0, 256, shape, dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2, 0]),
        "x_test": rng.integers(0, 256, test_shape, dtype=np.uint8),
        "y_test": np.array([2, 1, 0, 3]),
    }


def _save(tmp_path: Path, arrays: dict, name: str = "d.npz") -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_grey(tmp_path):
    a = _arrays()
    d = load_dataset(_save(tmp_path, a), data_dir=str(tmp_path))
    assert d.x_train.shape == (7, 1, 5, 6) and d.x_test.shape == (4, 1, 5, 6)
    assert np.array_equal(d.x_train[:, 0].numpy(), a["x_train"])
    assert np.array_equal(d.x_test[:, 0].numpy(), a["x_test"])
    assert d.y_train.tolist() == a["y_train"].tolist() and d.y_train.dtype == torch.int64
    assert d.classes == ["0", "1", "2", "3"]  # max label over train and test
    assert d.default_augment == "crop"


def test_npz_rgb_with_classes(tmp_path):
    a = _arrays(rgb=True) | {"classes": np.array(["cat", "dog", "eel", "fox"])}
    d = load_dataset(_save(tmp_path, a), data_dir=str(tmp_path))
    assert d.x_train.shape == (7, 3, 5, 6) and d.channels == 3
    assert np.array_equal(d.x_train.permute(0, 2, 3, 1).numpy(), a["x_train"])
    assert np.array_equal(d.x_test.permute(0, 2, 3, 1).numpy(), a["x_test"])
    assert d.x_train.is_contiguous()
    assert d.classes == ["cat", "dog", "eel", "fox"]


def test_npz_image_size(tmp_path):
    d = load_dataset(_save(tmp_path, _arrays(rgb=True)), data_dir=str(tmp_path), image_size=8)
    assert d.x_train.shape == (7, 3, 8, 8) and d.x_test.shape == (4, 3, 8, 8)


def _bad(**changes) -> dict:
    a = _arrays()
    for k, v in changes.items():
        if v is None:
            del a[k]
        else:
            a[k] = v
    return a


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (_bad(x_test=None, y_test=None), r"lacks the arrays \['x_test', 'y_test'\]"),
        (_bad(x_train=np.zeros((7, 5, 6), np.float32)), r"x_train .* must be uint8.*float32"),
        (_bad(x_train=np.zeros((7, 30), np.uint8)), r"x_train .*\[N, H, W\].*shape \(7, 30\)"),
        (_bad(x_train=np.zeros((7, 3, 5, 6), np.uint8)), r"channels-last"),
        (_bad(y_train=np.array([0, 1, 2])), r"differ in length \(7 images, 3 labels\)"),
        (_bad(y_train=np.linspace(0, 1, 7)), r"y_train .* integer labels.*float64"),
        (_bad(y_test=np.array([0, -1, 1, 0])), r"y_test .* negative label -1"),
        (_bad(x_test=np.zeros((4, 5, 7), np.uint8)), r"test images .* train images"),
        (_bad(classes=np.array(["a", "b"])), r"classes .* 2 classes .* at least 4"),
        (_bad(x_train=np.zeros((0, 5, 6), np.uint8), y_train=np.zeros(0, int)), r"no images"),
    ],
)
def test_npz_malformed(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        load_dataset(_save(tmp_path, arrays), data_dir=str(tmp_path))


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset: no such file"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}", data_dir=str(tmp_path))


def test_npz_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not an archive")
    with pytest.raises(DataError, match=r"not a valid \.npz"):
        load_dataset(f"npz:{path}", data_dir=str(tmp_path))
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"single array"):
        load_dataset(f"npz:{tmp_path / 'one.npy'}", data_dir=str(tmp_path))


def test_npz_object_array(tmp_path):
    a = _arrays() | {"classes": np.array(["a", 1, None, 2.0], dtype=object)}
    path = tmp_path / "obj.npz"
    np.savez(path, **a)
    with pytest.raises(DataError, match=r"cannot read 'classes'"):
        load_dataset(f"npz:{path}", data_dir=str(tmp_path))


def test_shared_mnist():
    path = SHARED_DATA / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent (only developer machines have ../shared/data)")
    d = load_dataset(f"npz:{path}")  # npz: writes no cache
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.num_classes == 10 and set(d.y_test.tolist()) == set(range(10))


# ---------------------------------------------------------------------------------- folder
def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _tree(root: Path, grey: bool = False) -> dict[tuple[str, str], list[np.ndarray]]:
    """Write root/{train,test}/{ant,bee}/*.png (6x6); returns the pixels written, in file order."""
    rng = np.random.default_rng(2)
    written: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("bee", "ant"):  # written out of order: classes are sorted by name
            shape = (6, 6) if grey else (6, 6, 3)
            ims = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
            for i, im in enumerate(ims):
                _png(root / split / cls / f"{i:02d}.png", im)
            written[split, cls] = ims
    return written


def _check_tree(d: ImageData, written, grey: bool = False) -> None:
    assert d.classes == ["ant", "bee"]
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    for split, x in (("train", d.x_train), ("test", d.x_test)):
        want = np.stack(written[split, "ant"] + written[split, "bee"])
        got = x[:, 0].numpy() if grey else x.permute(0, 2, 3, 1).numpy()
        assert np.array_equal(got, want)


def test_folder_tree_exact_pixels_and_cache(tmp_path):
    written = _tree(tmp_path / "tree")
    data_dir = tmp_path / "data"
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    assert d.x_train.shape == (6, 3, 6, 6) and d.default_augment == "crop_flip"
    _check_tree(d, written)
    caches = list((data_dir / ".pal-cache").glob("folder-*"))
    assert len(caches) == 1
    again = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)
    assert list((data_dir / ".pal-cache").glob("folder-*")) == caches


def test_folder_cache_is_used(tmp_path):
    _tree(tmp_path / "tree")
    data_dir = tmp_path / "data"
    load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    # overwriting a file in place leaves the folder mtimes (the cache key) unchanged, so a
    # cached load never decodes the damaged file while a fresh data_dir does
    (tmp_path / "tree" / "train" / "ant" / "00.png").write_bytes(b"not a png")
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    assert d.x_train.shape == (6, 3, 6, 6)
    with pytest.raises(DataError, match=r"cannot decode image .*00\.png"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path / "fresh"))


def test_folder_grey_stays_one_channel(tmp_path):
    written = _tree(tmp_path / "tree", grey=True)
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path / "data"))
    assert d.channels == 1 and d.default_augment == "crop"
    _check_tree(d, written, grey=True)


def test_folder_mixed_grey_and_rgb_becomes_rgb(tmp_path):
    _tree(tmp_path / "tree")
    grey = np.arange(36, dtype=np.uint8).reshape(6, 6)
    _png(tmp_path / "tree" / "train" / "ant" / "zz.png", grey)
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path / "data"))
    assert d.channels == 3
    assert np.array_equal(d.x_train[3].numpy(), np.stack([grey] * 3))  # ant's last file


@pytest.mark.parametrize("top", ["", "mytree/"])
def test_folder_tar_gz(tmp_path, top):
    written = _tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / "tree" / split, arcname=top + split)
    data_dir = tmp_path / "data"
    d = load_dataset(f"folder:{archive}", data_dir=str(data_dir))
    _check_tree(d, written)
    assert len(list((data_dir / ".pal-cache").glob("extracted-*"))) == 1
    assert len(list((data_dir / ".pal-cache").glob("folder-*"))) == 1
    again = load_dataset(f"folder:{archive}", data_dir=str(data_dir))
    assert torch.equal(again.x_test, d.x_test)


def test_folder_mixed_sizes(tmp_path):
    _tree(tmp_path / "tree")
    _png(tmp_path / "tree" / "test" / "bee" / "big.png", np.zeros((9, 7, 3), np.uint8))
    with pytest.raises(DataError, match=r"image_size: .*differ in size.*6x6.*9x7"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path / "data"))
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path / "data"), image_size=8)
    assert d.x_train.shape == (6, 3, 8, 8) and d.x_test.shape == (5, 3, 8, 8)


def test_folder_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"dataset: no such folder or archive"):
        load_dataset(f"folder:{tmp_path / 'nope'}", data_dir=str(tmp_path))


def test_folder_without_test(tmp_path):
    (tmp_path / "tree" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no test/ folder"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path))


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "tree" / "train").mkdir(parents=True)
    (tmp_path / "tree" / "test").mkdir()
    with pytest.raises(DataError, match=r"train' has no class folders"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path))


def test_folder_empty_class(tmp_path):
    _tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cow").mkdir()
    (tmp_path / "tree" / "train" / "cow" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*cow' holds no images"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path))


def test_folder_test_class_not_in_train(tmp_path):
    _tree(tmp_path / "tree")
    _png(tmp_path / "tree" / "test" / "cow" / "0.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"class folders that train/ lacks: \['cow'\]"):
        load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(tmp_path))


def test_folder_archive_without_tree(tmp_path):
    (tmp_path / "x" / "stuff").mkdir(parents=True)
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "x" / "stuff", arcname="stuff")
    with pytest.raises(DataError, match=r"holds no train/ and test/ folders"):
        load_dataset(f"folder:{archive}", data_dir=str(tmp_path / "data"))


@pytest.mark.slow
def test_shared_cifar10_jpeg(tmp_path):
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (only developer machines have ../shared/data)")
    d = load_dataset(f"folder:{archive}", data_dir=str(tmp_path))
    assert d.x_train.shape == (50000, 3, 32, 32) and d.x_test.shape == (10000, 3, 32, 32)
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck" and d.num_classes == 10
    assert d.y_train.bincount().tolist() == [5000] * 10
    assert d.default_augment == "crop_flip"
    again = load_dataset(f"folder:{archive}", data_dir=str(tmp_path))
    assert torch.equal(again.x_test, d.x_test)
