"""The decode cache: one ``.npy`` per array, images channels-first, read back as memory maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal.data import load_dataset
from pal.data.cache import cached, read_cache


def _mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory map holds ``t``'s first byte (Linux ``/proc/self/maps``), or None."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= ptr < hi and len(rest) >= 5:
            return rest[4]
    return None


def _tree(root: Path, grey: bool = False) -> np.ndarray:
    """root/{train,test}/ant/*.png (5x7); returns the training pixels, channels-last."""
    rng = np.random.default_rng(3)
    shape = (5, 7) if grey else (5, 7, 3)
    train = []
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            im = rng.integers(0, 256, shape, dtype=np.uint8)
            (root / split / "ant").mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(root / split / "ant" / f"{i}.png")
            if split == "train":
                train.append(im)
    return np.stack(train)


pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="reads the process's memory maps (Linux)"
)


@pytest.mark.parametrize("grey", [False, True])
def test_images_are_the_cache_files_memory_map_from_the_first_load_on(tmp_path, grey):
    pixels = _tree(tmp_path / "tree", grey)
    data_dir = tmp_path / "data"
    first = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    again = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    (cache,) = (data_dir / ".pal-cache").glob("folder-tree-*")
    for d in (first, again):
        assert _mapped_file(d.x_train) == str(cache / "x_train.npy")
        assert _mapped_file(d.x_test) == str(cache / "x_test.npy")
        assert d.x_train.stride() == (d.x_train[0].numel(), 35, 7, 1)  # row-major, no copy
        got = d.x_train[:, 0] if grey else d.x_train.permute(0, 2, 3, 1)
        assert np.array_equal(got.numpy(), pixels)
    assert not (_mapped_file(first.y_train) or "").endswith(".npy")  # labels are read whole


def test_writing_to_the_images_leaves_the_cache_file_as_it_was(tmp_path):
    pixels = _tree(tmp_path / "tree")
    data_dir = tmp_path / "data"
    d = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    d.x_train.zero_()  # copy-on-write: this process's pages only
    again = load_dataset(f"folder:{tmp_path / 'tree'}", data_dir=str(data_dir))
    assert np.array_equal(again.x_train.permute(0, 2, 3, 1).numpy(), pixels)


def test_a_damaged_cache_is_rebuilt_and_an_unwritable_one_warns(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x_train": np.full((3, 4, 4, 2), 7, np.uint8), "y_train": np.arange(3)}

    path = tmp_path / "c" / "k"
    a = cached(path, build)
    assert len(calls) == 1 and isinstance(a["x_train"].base, np.memmap)
    assert a["x_train"].shape == (3, 4, 4, 2) and int(a["x_train"].sum()) == 7 * 96
    assert cached(path, build)["y_train"].tolist() == [0, 1, 2] and len(calls) == 1
    (path / "x_train.npy").write_bytes((path / "x_train.npy").read_bytes()[:-5])  # truncated
    assert read_cache(path) is None
    assert int(cached(path, build)["x_train"].sum()) == 7 * 96 and len(calls) == 2
    (tmp_path / "file").write_text("")  # a data_dir that is a file cannot hold a cache
    with pytest.warns(UserWarning, match="data_dir: could not write the dataset cache"):
        a = cached(tmp_path / "file" / "k", build)
    assert int(a["x_train"].sum()) == 7 * 96 and not isinstance(a["x_train"].base, np.memmap)


def test_the_single_file_cache_of_earlier_versions_is_removed(tmp_path):
    old = tmp_path / "k.npz"
    np.savez(old, y_train=np.arange(2))
    cached(tmp_path / "k", lambda: {"y_train": np.arange(3)})
    assert not old.exists() and read_cache(tmp_path / "k")["y_train"].tolist() == [0, 1, 2]
