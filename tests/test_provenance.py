"""Every run says which code made it: the package version, the git commit, dirty or not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient

import pal
from pal import provenance
from pal.provenance import CODE_VERSION_TAG, COMMIT_TAG, DIRTY_TAG, VERSION_TAG, merge_versions
from pal.results import LabelRound
from pal.tracking import MLflowTracker, log_label_round, start_sweep_run
from tests.conftest import FAST, REPO

ASK = "import json, pal.provenance as p; print(json.dumps(p.code_version()))"


def version_of(checkout) -> dict[str, str]:
    """The tags a fresh process importing pal from ``checkout`` computes."""
    out = subprocess.run(
        [sys.executable, "-c", ASK],
        cwd=checkout,
        env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A git checkout holding a copy of the package, one commit."""
    if shutil.which("git") is None:
        pytest.skip("git is absent")
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO / "pal", root / "pal", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text("__pycache__/\n")

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    return root, git


def test_a_clean_checkout_names_its_commit_and_a_change_makes_it_dirty(checkout):
    root, git = checkout
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    clean = version_of(root)
    assert clean[COMMIT_TAG] == head and clean[DIRTY_TAG] == "false"
    assert clean[CODE_VERSION_TAG] == f"{clean[VERSION_TAG]}+g{head[:12]}"

    loop = root / "pal" / "loop.py"
    original = loop.read_text()
    loop.write_text(original + "\n# a change\n")
    first = version_of(root)
    loop.write_text(original + "\n# another change\n")
    second = version_of(root)
    assert first[DIRTY_TAG] == second[DIRTY_TAG] == "true" and first[COMMIT_TAG] == head
    assert first[CODE_VERSION_TAG].startswith(clean[CODE_VERSION_TAG] + ".dirty")
    assert first[CODE_VERSION_TAG] != second[CODE_VERSION_TAG]  # two edits, two versions
    loop.write_text(original)

    (root / "pal" / "extra.py").write_text("X = 1\n")  # an untracked module counts too
    assert version_of(root)[DIRTY_TAG] == "true"
    (root / "pal" / "extra.py").unlink()
    assert version_of(root) == clean


def test_outside_a_checkout_only_the_package_version(tmp_path):
    shutil.copytree(REPO / "pal", tmp_path / "pal", ignore=shutil.ignore_patterns("__pycache__"))
    tags = version_of(tmp_path)
    assert COMMIT_TAG not in tags and DIRTY_TAG not in tags
    assert tags[CODE_VERSION_TAG] == tags[VERSION_TAG] == pal.__version__


def test_merge_versions_lists_each_version_once_in_order():
    assert merge_versions(None, "a") == "a"
    assert merge_versions("a", "a") == "a"
    assert merge_versions("a", "b") == "a b"
    assert merge_versions("a b", "a") == "a b"


def test_every_kind_of_run_carries_the_code_version(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mine = provenance.code_version()
    client = MlflowClient(uri)
    config = pal.make_config({**FAST, "rounds": 0}, strategy="random")
    with MLflowTracker(config, uri, experiment_name="versions") as tracker:
        pass
    parent = start_sweep_run(uri, "versions", "study", {"base": FAST})
    label = log_label_round(
        uri,
        None,
        "project",
        LabelRound(
            round=0,
            strategy="random",
            label_free=True,
            n=0,
            n_labeled=0,
            n_offerable=0,
            config={"seed": 0},
        ),
        {},
    )
    for run_id in (tracker.run_id, parent, label):
        tags = client.get_run(run_id).data.tags
        assert {k: tags.get(k) for k in mine} == mine, run_id

    # a run resumed by other code lists both versions
    other = {**mine, CODE_VERSION_TAG: mine[CODE_VERSION_TAG] + ".other"}
    monkeypatch.setattr("pal.tracking.runs.code_version", lambda: other)
    with MLflowTracker(config, uri, experiment_name="versions", run_id=tracker.run_id):
        pass
    tags = client.get_run(tracker.run_id).data.tags
    assert tags[CODE_VERSION_TAG] == f"{mine[CODE_VERSION_TAG]} {other[CODE_VERSION_TAG]}"
