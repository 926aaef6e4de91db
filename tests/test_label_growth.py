"""``pal label add``: a project's pool grows from a second manifest; project files' modes.

Tiny PNG pools (8x8 grey squares of two classes) in ``tmp_path``, rounds of the ``random``
strategy with two epochs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal.labeling.growth import add_images
from pal.labeling.project import ADD_JOURNAL, Project, ProjectError
from pal.labeling.rounds import load_pool, next_batch
from pal.labeling.setup import init_project
from pal.labeling.status import export_labeled
from tests.helpers import fail_writes_of, read_csv

FAST = {"epochs_task": 2, "epochs_scoring": 2, "subqueries": 1, "val_checks": 1}
ROUND = {"epochs_task": 2, "epochs_scoring": 2}


def write_images(folder: Path, names: list[str], seed: int) -> None:
    """8x8 grey PNGs: ``a_*`` dark, ``b_*`` light, with noise (``seed``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        base = 60 if Path(name).name.startswith("a") else 190
        pixels = np.clip(base + rng.normal(0, 25, (8, 8)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / name)


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,label,split\n" + "".join(f"{p},{lab},{sp}\n" for p, lab, sp in rows))
    return path


@pytest.fixture
def pool(tmp_path) -> Path:
    """``data/first/manifest.csv``: 24 pool images (2 labeled), 6 val, 4 test."""
    folder = tmp_path / "data" / "first"
    names = [f"{c}_{i:02d}.png" for c in "ab" for i in range(17)]
    write_images(folder / "images", names, seed=0)
    rows = []
    for i, name in enumerate(names):
        label = name[0]
        if i % 17 < 12:
            rows.append((f"images/{name}", label if i % 17 == 0 else "", "pool"))
        elif i % 17 < 15:
            rows.append((f"images/{name}", label, "val"))
        else:
            rows.append((f"images/{name}", label, "test"))
    return write_manifest(folder / "manifest.csv", rows)


def make_project(tmp_path: Path, manifest: Path, name: str = "proj") -> Project:
    return init_project(tmp_path / name, manifest, overrides=FAST, preset="none")


def more_images(tmp_path: Path, n: int = 10, labeled: int = 2, folder: str = "more") -> Path:
    """``data/first/<folder>/added.csv`` (below the first manifest's folder): ``n`` new pool
    images, the first ``labeled`` labeled."""
    where = tmp_path / "data" / "first" / folder
    names = [f"{'ab'[i % 2]}_new{i:02d}.png" for i in range(n)]
    write_images(where / "img", names, seed=1)
    rows = [(f"img/{m}", m[0] if i < labeled else "", "") for i, m in enumerate(names)]
    return write_manifest(where / "added.csv", rows)


def digest(*folders: Path) -> dict[str, str]:
    """Path -> SHA-256 of every file under ``folders``."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def add(project: Project, manifest: Path):
    with project.lock():
        return add_images(project, manifest)


def test_add_grows_the_pool_from_the_next_round_and_keeps_the_ledger(tmp_path, pool):
    project = make_project(tmp_path, pool)
    with project.lock():
        next_batch(project, 5, "random", overrides=ROUND)
    ledger_before = (project.folder / "labels.csv").read_bytes()
    round_before = digest(project.round_dir(1))
    added = more_images(tmp_path)
    # one row names an image of the project by another path: skipped
    with open(added, "a") as fh:
        fh.write("../images/a_03.png,,pool\n")

    summary = add(project, added)
    assert (summary.added, summary.labeled, summary.already) == (10, 2, 1)
    assert (summary.pool, summary.first_round, summary.outside) == (34, 2, 0)
    assert summary.pool_manifest.parent == pool.parent  # earlier relative paths resolve as before
    assert "added 10 pool images" in summary.text()

    ledger_after = (project.folder / "labels.csv").read_bytes()
    assert ledger_after.startswith(ledger_before)  # earlier rows byte-identical
    new_rows = read_csv(project.folder / "labels.csv")[-2:]
    assert [(r["path"], r["label"], r["round"], r["source"]) for r in new_rows] == [
        ("more/img/a_new00.png", "a", "0", "manifest"),
        ("more/img/b_new01.png", "b", "0", "manifest"),
    ]
    assert digest(project.round_dir(1)) == round_before

    opened = Project.open(project.folder)
    assert opened.manifest == summary.pool_manifest
    assert opened.config.dataset == f"manifest:{summary.pool_manifest}"
    assert opened.initial_manifest == pool
    assert opened.meta["additions"][0]["images"] == 10
    assert opened.meta["additions"][0]["first_round"] == 2
    assert not (project.folder / ADD_JOURNAL).exists()
    cache = [p.name for p in (project.folder / ".pal-cache").iterdir()]
    assert len(cache) == 1 and summary.pool_manifest.stem.replace(".", "_") in cache[0]
    first = {r["path"] for r in read_csv(pool)}
    union = read_csv(summary.pool_manifest)
    assert [r["path"] for r in union[: len(first)]] == [r["path"] for r in read_csv(pool)]

    data, pool_ = load_pool(opened)
    new_unlabeled = {f"more/img/{'ab'[i % 2]}_new{i:02d}.png" for i in range(2, 10)}
    offerable = {data.ids_train[i] for i in pool_.unlabeled.tolist()}
    assert new_unlabeled <= offerable
    assert not new_unlabeled & {r["path"] for r in opened.batch(1)}  # round 1 came before
    with opened.lock():
        record = next_batch(opened, len(offerable), "random", force=True, overrides=ROUND)
    assert record.n_labeled == 4  # 2 at init, 2 from the added manifest
    assert new_unlabeled <= {r["path"] for r in opened.batch(2)}

    out = tmp_path / "export" / "labeled.csv"
    export_labeled(opened, out)
    exported = {r["path"]: r["label"] for r in read_csv(out)}
    assert exported["../data/first/more/img/a_new00.png"] == "a"
    assert all((out.parent / p).is_file() for p in exported)

    # the same manifest again adds nothing and writes nothing
    before = digest(project.folder, pool.parent)
    again = add(opened, added)
    assert (again.added, again.already) == (0, 11)
    assert digest(project.folder, pool.parent) == before

    # a second add: the first add's pool manifest is replaced by the next one
    third = more_images(tmp_path, n=4, labeled=0, folder="third")
    summary3 = add(opened, third)
    assert summary3.first_round == 3 and summary3.pool == 38
    assert not summary.pool_manifest.exists() and summary3.pool_manifest.is_file()
    assert len(Project.open(project.folder).meta["additions"]) == 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("img/a_new00.png", "zebra", "pool")], "classes: labels 'zebra' (row 2)"),
        ([("img/a_new00.png", "a", "val")], "row 2: a new val image"),
        ([("img/b_new01.png", "", ""), ("img/a_new00.png", "a", "test")], "row 3: a new test"),
        ([("../images/a_00.png", "b", "")], "labeled 'b' here but labeled 'a'"),
        ([("../images/a_12.png", "a", "pool")], "a val image of the project"),
        ([("img/a_new00.png", "", ""), ("img/./a_new00.png", "", "")], "row 3: the same file"),
        ([("img/missing.png", "", "")], "no such file"),
    ],
)
def test_bad_additions_are_refused_and_change_nothing(tmp_path, pool, rows, message):
    project = make_project(tmp_path, pool)
    more_images(tmp_path)
    bad = write_manifest(tmp_path / "data" / "first" / "more" / "bad.csv", rows)
    before = digest(project.folder, pool.parent)
    with pytest.raises(ProjectError, match=re.escape(message)):
        add(project, bad)
    assert digest(project.folder, pool.parent) == before


def test_an_undecodable_image_is_refused_after_decoding_and_the_add_undone(tmp_path, pool):
    project = make_project(tmp_path, pool)
    added = more_images(tmp_path)
    (added.parent / "img" / "b_new03.png").write_bytes(b"not a png")
    before = digest(project.folder, pool.parent)
    with pytest.raises(ProjectError, match="not an image PIL decodes"):
        add(project, added)
    assert digest(project.folder, pool.parent) == before


def test_a_write_failing_midway_leaves_the_project_as_it_was(tmp_path, pool, monkeypatch):
    import pal.labeling.project as project_module

    project = make_project(tmp_path, pool)
    added = more_images(tmp_path)
    before = digest(project.folder, pool.parent)
    real = fail_writes_of(monkeypatch, "project.json")
    with pytest.raises(OSError, match="disk full"):
        add(project, added)
    monkeypatch.setattr(project_module, "write_atomic", real)
    assert digest(project.folder, pool.parent) == before
    assert add(Project.open(project.folder), added).added == 10


KILLED_ADD = """
import os, signal, sys
from pal.labeling.project import Project
from pal.labeling.growth import add_images
project = Project.open(sys.argv[1])
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
with project.lock():
    setattr(Project, sys.argv[3], killed)
    add_images(project, sys.argv[2])
"""


@pytest.mark.parametrize("at", ["save_meta", "finish_add"])
def test_an_add_killed_is_undone_or_finished_by_the_next_command(tmp_path, pool, at):
    project = make_project(tmp_path, pool)
    added = more_images(tmp_path)
    before = digest(project.folder, pool.parent)
    ledger_before = (project.folder / "labels.csv").read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", KILLED_ADD, str(project.folder), str(added), at],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (project.folder / ADD_JOURNAL).exists()
    opened = Project.open(project.folder)
    with opened.lock():  # every command takes the lock first
        pass
    assert not (project.folder / ADD_JOURNAL).exists()
    if at == "save_meta":  # killed before project.json: undone
        assert digest(project.folder, pool.parent) == before
    else:  # killed after: finished
        assert opened.manifest != pool and opened.manifest.is_file()
        assert opened.config.dataset == f"manifest:{opened.manifest}"
        assert "manifest:" + str(opened.manifest) in (project.folder / "config.yaml").read_text()
        ledger = (project.folder / "labels.csv").read_bytes()
        assert ledger.startswith(ledger_before) and ledger.count(b"\n") == 2 + 2 + 1
        with opened.lock():
            next_batch(opened, 5, "random", overrides=ROUND)


def test_images_outside_the_first_manifests_folder_are_named_for_label_studio(tmp_path, pool):
    project = make_project(tmp_path, pool)
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere, ["a_x.png", "b_y.png"], seed=2)
    added = write_manifest(
        elsewhere / "m.csv", [("a_x.png", "", ""), (str(elsewhere / "b_y.png"), "", "")]
    )
    summary = add(project, added)
    assert summary.outside == 2 and summary.document_root == tmp_path
    assert "--document-root" in summary.text()
    paths = [r["path"] for r in read_csv(summary.pool_manifest)][-2:]
    assert paths == [str(elsewhere / "a_x.png"), str(elsewhere / "b_y.png")]  # absolute


def test_a_project_made_before_add_existed_opens_and_runs(tmp_path, pool):
    project = make_project(tmp_path, pool)
    meta = json.loads((project.folder / "project.json").read_text())
    meta.pop("initial_manifest", None)
    meta.pop("additions", None)
    assert set(meta) >= {"manifest", "manifest_sha256"} and "additions" not in meta
    opened = Project.open(project.folder)
    assert opened.manifest == pool == opened.initial_manifest
    assert opened.config.dataset == f"manifest:{pool}"
    with opened.lock():
        next_batch(opened, 5, "random", overrides=ROUND)
    assert len(opened.batch(1)) == 5
    # and it can grow
    assert add(opened, more_images(tmp_path)).added == 10


def test_project_files_and_folders_honour_the_umask(tmp_path, pool):
    old = os.umask(0o022)
    try:
        project = make_project(tmp_path, pool)
        with project.lock():
            next_batch(project, 5, "random", overrides=ROUND)
        add(project, more_images(tmp_path))
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(project.folder) == 0o755
        assert mode(project.round_dir(1)) == 0o755
        for name in ("project.json", "config.yaml", "labels.csv", "label_config.xml"):
            assert mode(project.folder / name) == 0o644, name
        for name in ("batch.csv", "tasks.json", "round.json"):
            assert mode(project.round_dir(1) / name) == 0o644, name
        assert mode(project.manifest) == 0o644
        os.umask(0o077)
        other = make_project(tmp_path, pool, "private")
        assert mode(other.folder) == 0o700 and mode(other.folder / "labels.csv") == 0o600
        # a file rewritten keeps its mode, as open() would
        (project.folder / "labels.csv").chmod(0o640)
        add(project, more_images(tmp_path, n=2, labeled=2, folder="again"))
        assert mode(project.folder / "labels.csv") == 0o640
    finally:
        os.umask(old)
