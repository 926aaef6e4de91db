"""The ``manifest:PATH`` dataset (images with their file identity, labeled or not, a declared
validation split) and the digits demo written as one."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pal
from pal.data import UNKNOWN_LABEL, DataError, ImageData, load_dataset
from pal.labeling.demo import DemoFiles, write_demo
from pal.loop import plan_experiment
from pal.training import UnderfitWarning, accuracy


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _png(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _index(image_id: str) -> int:
    """``images/train_00042.png`` -> 42."""
    return int(Path(image_id).stem.split("_")[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("demo"))


# ------------------------------------------------------------------------------------ demo
def test_the_demo_loads_with_an_unlabeled_pool_and_labeled_val_and_test(demo, digits, tmp_path):
    d = load_dataset(f"manifest:{demo.manifest}", data_dir=str(tmp_path))
    assert d.x_train.shape == (1300, 1, 8, 8) and d.x_test.shape == (497, 1, 8, 8)
    assert d.classes == [str(i) for i in range(10)] and d.default_augment == "crop"
    # pool rows first (unlabeled), then the 10 x 10 val rows (labeled)
    assert d.n_unknown == 1200
    assert bool((d.y_train[:1200] == UNKNOWN_LABEL).all())
    assert np.array_equal(d.val_indices, np.arange(1200, 1300))
    assert d.val_indices.dtype == np.int64
    train_idx = [_index(i) for i in d.ids_train]
    test_idx = [_index(i) for i in d.ids_test]
    assert sorted(train_idx) == list(range(1300)) and test_idx == list(range(497))
    # every image is the digits image its file was written from, pixel for pixel
    assert torch.equal(d.x_train, digits.x_train[train_idx])
    assert torch.equal(d.x_test, digits.x_test)
    assert torch.equal(d.y_test, digits.y_test)
    val_true = digits.y_train[train_idx[1200:]]
    assert torch.equal(d.y_train[1200:], val_true)
    assert val_true.bincount().tolist() == [10] * 10
    rows = _rows(demo.manifest)
    assert [r["path"] for r in rows if r["split"] == "val"] == d.ids_train[1200:]
    assert all(r["label"] == "" for r in rows if r["split"] == "pool")
    # the annotator's answers: the true label of every pool image, and nothing else
    answers = _rows(demo.answers)
    assert [a["path"] for a in answers] == d.ids_train[:1200]
    assert [int(a["label"]) for a in answers] == digits.y_train[train_idx[:1200]].tolist()


def test_the_demo_draws_its_val_rows_from_a_fixed_seed(demo, tmp_path):
    again = write_demo(tmp_path / "again")
    assert demo.manifest.read_text() == again.manifest.read_text()
    small = write_demo(tmp_path / "small", val_per_class=2)
    assert sum(r["split"] == "val" for r in _rows(small.manifest)) == 20
    assert len(_rows(small.answers)) == 1300 - 20


def test_the_demo_refuses_a_folder_that_holds_a_manifest(demo):
    before = demo.manifest.read_text()
    with pytest.raises(FileExistsError, match=r"manifest\.csv.*exists"):
        write_demo(demo.folder)
    assert demo.manifest.read_text() == before


def test_a_run_refuses_a_manifest_with_unlabeled_images(demo, tmp_path):
    config = pal.make_config(
        dataset=f"manifest:{demo.manifest}", data_dir=str(tmp_path), strategy="random"
    )
    message = r"manifest:.*has 1,200 images without a label.*'pal label'"
    with pytest.raises(DataError, match=message):
        plan_experiment(config)
    with pytest.raises(DataError, match=message):
        pal.Experiment(config)
    with pytest.raises(DataError, match=message):
        pal.run_experiment(config, tracking=False)


def _labeled_demo(demo: DemoFiles, folder: Path) -> Path:
    """The demo's manifest with every pool row given its answer, written beside its images."""
    answers = {a["path"]: a["label"] for a in _rows(demo.answers)}
    rows = [
        [str(demo.folder / r["path"]), answers.get(r["path"], r["label"]), r["split"]]
        for r in _rows(demo.manifest)
    ]
    return _write_manifest(folder / "labeled.csv", ["path", "label", "split"], rows)


def test_a_labeled_manifest_runs_with_its_own_validation_split(demo, digits, tmp_path):
    manifest = _labeled_demo(demo, tmp_path)
    data = load_dataset(f"manifest:{manifest}", data_dir=str(tmp_path))
    assert data.n_unknown == 0
    config = dict(
        dataset=f"manifest:{manifest}",
        data_dir=str(tmp_path),
        strategy="random",
        pool_size=300,
        val_size=5,  # not used: the manifest declares its validation split
        initial_size=30,
        query_size=10,
        rounds=1,
        epochs_task=1,
        batch_size=32,
        device="cpu",
    )
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderfitWarning)
        result = pal.run_experiment(
            config, tracking=False, callbacks=(lambda record, exp: seen.append(exp.pool),)
        )
    pool = seen[-1]
    assert np.array_equal(pool.val, np.arange(1200, 1300))  # the manifest's val rows
    val_ids = {data.ids_train[i] for i in pool.val}
    assert val_ids == {
        str(demo.folder / r["path"]) for r in _rows(demo.manifest) if r["split"] == "val"
    }
    assert len(pool.indices) == 300 + 100 and pool.n_budget == 300
    assert not set(pool.labeled) & set(pool.val)
    assert [r.n_pool for r in result.rounds] == [300, 300]
    assert [r.n_labeled for r in result.rounds] == [30, 40]
    assert all(
        math.isfinite(r.val_accuracy) and math.isfinite(r.test_accuracy) for r in result.rounds
    )


# ------------------------------------------------------------------------------ the loader
def test_paths_relative_to_the_manifest_or_absolute_keep_their_ids(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    a = _png(proj / "imgs" / "a.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    b = _png(proj / "imgs" / "b.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))  # grey
    c = _png(elsewhere / "c.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    e = _png(proj / "e.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    rows = [
        ["imgs/a.png", "cat", "", "ignored"],
        [str(elsewhere / "c.png"), "dog", "test", "x"],
        ["imgs\\b.png", "", "", ""],  # Windows separators
        ["./sub/../e.png", "dog", "val", ""],
    ]
    _write_manifest(proj / "m.csv", ["path", "label", "split", "note"], rows)
    monkeypatch.chdir(tmp_path)  # PATH relative to the cwd, image paths to the manifest
    d = load_dataset("manifest:proj/m.csv", data_dir=str(tmp_path / "data"))
    assert d.ids_train == ["imgs/a.png", "imgs/b.png", "./sub/../e.png"]
    assert d.ids_test == [str(elsewhere / "c.png")]
    assert d.classes == ["cat", "dog"]
    assert d.y_train.tolist() == [0, UNKNOWN_LABEL, 1] and d.y_test.tolist() == [1]
    assert d.val_indices.tolist() == [2]
    assert d.channels == 3 and d.default_augment == "crop_flip"  # not every image is grey
    got = d.x_train.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got[0], a) and np.array_equal(got[2], e)
    assert np.array_equal(got[1], np.stack([b] * 3, axis=-1))
    assert np.array_equal(d.x_test.permute(0, 2, 3, 1).numpy()[0], c)


def test_a_cached_load_is_identical_and_needs_no_image_file(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for i, split in enumerate(["pool", "pool", "val", "test"]):
        _png(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 256, (5, 7), dtype=np.uint8))
        rows.append([f"imgs/{i}.png", "" if i == 0 else "ab"[i % 2], split])
    manifest = _write_manifest(tmp_path / "m.csv", ["path", "label", "split"], rows)
    data_dir = tmp_path / "data"
    first = load_dataset(f"manifest:{manifest}", data_dir=str(data_dir))
    caches = list((data_dir / ".pal-cache").glob("manifest-m_csv-*"))
    assert len(caches) == 1
    for f in (tmp_path / "imgs").iterdir():
        f.unlink()  # a second load decodes nothing
    again = load_dataset(f"manifest:{manifest}", data_dir=str(data_dir))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, field), getattr(first, field)), field
    assert again.ids_train == first.ids_train == ["imgs/0.png", "imgs/1.png", "imgs/2.png"]
    assert again.ids_test == first.ids_test == ["imgs/3.png"]
    assert np.array_equal(again.val_indices, first.val_indices) and again.val_indices.tolist() == [
        2
    ]
    assert again.classes == first.classes == ["a", "b"] and again.n_unknown == 1
    assert list((data_dir / ".pal-cache").glob("manifest-*")) == caches
    # an edited manifest is another cache key: decoded again (and its files are gone now)
    with open(manifest, "a") as fh:
        fh.write("imgs/0.png,a,pool\n")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"manifest:{manifest}", data_dir=str(data_dir))


def test_a_manifest_without_val_or_test_rows(tmp_path):
    _png(tmp_path / "0.png", np.zeros((6, 6), np.uint8))
    _png(tmp_path / "1.png", np.full((6, 6), 9, np.uint8))
    manifest = _write_manifest(tmp_path / "m.csv", ["path"], [["0.png"], ["1.png"]])
    d = load_dataset(f"manifest:{manifest}", data_dir=str(tmp_path / "data"), image_size=4)
    assert d.x_train.shape == (2, 1, 4, 4) and d.x_test.shape == (0, 1, 4, 4)
    assert d.y_test.shape == (0,) and d.ids_test == []
    assert d.val_indices is None  # declares no validation split: val_size is drawn
    assert d.classes == [] and d.n_unknown == 2


def test_mixed_image_sizes_need_image_size(tmp_path):
    _png(tmp_path / "a.png", np.zeros((6, 6, 3), np.uint8))
    _png(tmp_path / "b.png", np.full((9, 7, 3), 200, np.uint8))
    _png(tmp_path / "c.png", np.full((9, 7), 50, np.uint8))
    manifest = _write_manifest(
        tmp_path / "m.csv",
        ["path", "label", "split"],
        [["a.png", "x", ""], ["b.png", "", ""], ["c.png", "y", "test"]],
    )
    name = f"manifest:{manifest}"
    with pytest.raises(
        DataError, match=r"image_size: the images of manifest .*m\.csv.*9x7 \(2 images\), 6x6"
    ):
        load_dataset(name, data_dir=str(tmp_path / "data"))
    d = load_dataset(name, data_dir=str(tmp_path / "data"), image_size=8)
    assert d.x_train.shape == (2, 3, 8, 8) and d.x_test.shape == (1, 3, 8, 8)
    assert bool((d.x_train[1] == 200).all()) and bool((d.x_test == 50).all())


def _bad_case(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A manifest with ``case``'s problem in several rows; returns it and the expected match."""
    for i in range(6):
        _png(tmp_path / f"{i}.png", np.full((4, 4), i, np.uint8))
    header = ["path", "label", "split"]
    rows = [[f"{i}.png", "ab"[i % 2], "pool"] for i in range(6)]  # rows 2..7
    if case == "no path column":
        header = ["file", "label", "split"]
        match = r"no 'path' column"
    elif case == "missing files":
        rows[1][0], rows[3][0] = "nope.png", "gone/x.png"
        match = r"rows 3, 5: no such file"
    elif case == "undecodable":
        (tmp_path / "0.png").write_bytes(b"not a png")
        (tmp_path / "2.png").write_text("nor this")
        match = r"rows 2, 4: not an image PIL decodes"
    elif case == "duplicates":
        rows[3][0], rows[5][0] = "0.png", "./sub/../0.png"
        match = r"rows 5, 7: the same file as an earlier row"
    elif case == "unknown split":
        rows[1][2], rows[2][2] = "train", "Validation"
        match = r"rows 3, 4: split 'train', 'validation' is none of pool, val, test"
    elif case == "val or test without a label":
        rows[0][1:], rows[3][1:], rows[4][1:] = ["", "val"], ["", "test"], ["", "pool"]
        match = r"rows 2, 5: a val or test row needs a label"
    elif case == "many rows":
        rows = [[f"missing{i}.png", "", ""] for i in range(13)]
        match = r"rows 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 3 more: no such file"
    elif case == "several problems":
        rows[1][0], rows[2][2], rows[4][1:] = "nope.png", "tset", ["", "test"]
        match = r"row 4: split 'tset'.*row 6: a val or test row.*row 3: no such file"
    elif case == "no training rows":
        rows = [[r[0], "a", "test"] for r in rows]
        match = r"no pool or val rows"
    return _write_manifest(tmp_path / "bad.csv", header, rows), match


@pytest.mark.parametrize(
    "case",
    [
        "no path column",
        "missing files",
        "undecodable",
        "duplicates",
        "unknown split",
        "val or test without a label",
        "many rows",
        "several problems",
        "no training rows",
    ],
)
def test_a_bad_manifest_names_every_offending_row(tmp_path, case):
    manifest, match = _bad_case(tmp_path, case)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"manifest:{manifest}", data_dir=str(tmp_path / "data"))
    assert str(manifest) in str(info.value)
    assert not list((tmp_path / "data").glob(".pal-cache/*"))  # nothing cached


def test_a_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=r"no such manifest file .*nope\.csv"):
        load_dataset(f"manifest:{tmp_path / 'nope.csv'}", data_dir=str(tmp_path))


def test_an_empty_test_split_scores_nan(tmp_path):
    assert math.isnan(accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)))
    rng = np.random.default_rng(5)
    rows = []
    for i in range(60):
        label = i % 2
        pixels = rng.integers(0, 100, (8, 8), dtype=np.uint8) + np.uint8(150 * label)
        _png(tmp_path / "imgs" / f"{i}.png", pixels)
        rows.append([f"imgs/{i}.png", "ab"[label], "val" if i >= 50 else "pool"])
    manifest = _write_manifest(tmp_path / "m.csv", ["path", "label", "split"], rows)
    config = pal.make_config(
        dataset=f"manifest:{manifest}",
        data_dir=str(tmp_path / "data"),
        strategy="random",
        initial_size=10,
        query_size=10,
        rounds=1,
        epochs_task=1,
        batch_size=16,
        device="cpu",
    )
    exp = pal.Experiment(config)
    assert exp.x_test.shape == (0, 1, 8, 8)
    assert exp.pool.val.tolist() == list(range(50, 60)) and exp.pool.n_budget == 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderfitWarning)
        record = exp.run_round()
    assert math.isnan(record.test_accuracy) and math.isfinite(record.val_accuracy)


# -------------------------------------------------------------------- the ImageData contract
def _image_data(**changes) -> ImageData:
    x = torch.zeros((4, 1, 5, 5), dtype=torch.uint8)
    fields = dict(
        name="t",
        x_train=x,
        y_train=torch.tensor([0, UNKNOWN_LABEL, 1, UNKNOWN_LABEL]),
        x_test=x[:2].clone(),
        y_test=torch.tensor([1, 0]),
        classes=["a", "b"],
        default_augment="crop",
    )
    return ImageData(**(fields | changes))


def test_image_data_holds_unknown_labels_ids_and_a_validation_split():
    d = _image_data(
        ids_train=["p0", "p1", "p2", "p3"], ids_test=["t0", "t1"], val_indices=np.array([2, 0])
    )
    assert d.n_unknown == 2 and d.val_indices.dtype == np.int64
    assert d.ids_train == ["p0", "p1", "p2", "p3"] and "unlabeled=2" in repr(d)
    assert _image_data().ids_train is None and _image_data().val_indices is None
    empty = torch.zeros((0, 1, 5, 5), dtype=torch.uint8)
    nothing_known = _image_data(
        y_train=torch.full((4,), UNKNOWN_LABEL), x_test=empty, y_test=torch.zeros(0), classes=[]
    )
    assert nothing_known.num_classes == 0 and nothing_known.n_unknown == 4


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"y_test": torch.tensor([1, UNKNOWN_LABEL])}, r"y_test must lie in \[0, 2\)"),
        ({"y_train": torch.tensor([0, -2, 1, 0])}, r"y_train .* or -1 \(not labeled yet\)"),
        ({"classes": []}, r"y_train must lie in \[0, 0\)"),
        ({"ids_train": ["a", "b", "c", "d"]}, r"ids for both splits or neither"),
        ({"ids_train": ["a", "b", "c"], "ids_test": ["x", "y"]}, r"ids_train .* 4 images .* 3"),
        ({"ids_train": ["a", "b", "c", "x"], "ids_test": ["x", "y"]}, r"unique .* \['x'\]"),
        ({"val_indices": np.array([0, 4])}, r"val_indices must lie in \[0, 4\)"),
        ({"val_indices": np.array([0, 0])}, r"val_indices must not repeat"),
        ({"val_indices": np.array([0, 1])}, r"validation images must be labeled.*\[1\]"),
        ({"val_indices": np.array([[0]])}, r"val_indices must be 1-D integer"),
    ],
)
def test_image_data_refuses_bad_labels_ids_and_validation_splits(changes, match):
    with pytest.raises(DataError, match=match):
        _image_data(**changes)
