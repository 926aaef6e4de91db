"""``pal label init``'s presets (chosen from the pool's images, under the user's own keys), the
decode cache inside the project, and the one-line fit warnings with the keys that help."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pal.config import Config, ConfigError, keys_in
from pal.data import load_dataset
from pal.data.cache import CACHE_DIR
from pal.labeling import presets
from pal.labeling.importer import import_annotations
from pal.labeling.project import Project, ProjectError
from pal.labeling.rounds import next_batch
from pal.labeling.setup import init_project, project_summary
from pal.training import UnderfitWarning, console_warnings, underfit_message, warn_underfit

CLASSES = ("ant", "bee")

# a round in a second or two on 8x8 images
TINY_ROUND = {
    "epochs_task": 1,
    "epochs_scoring": 1,
    "finetune_epochs": 1,
    "subqueries": 1,
    "val_checks": 1,
    "device": "cpu",
}


def write_pool(folder: Path, side: int, channels: int, n: int = 12) -> Path:
    """A manifest of ``n`` unlabeled pool images (``side`` px, ``channels`` channels) and two
    labeled ``val`` images; the pool's answers in ``answers.csv`` (``ant`` / ``bee`` in turn)."""
    rng = np.random.default_rng(side * 10 + channels)
    rows, answers = [], []
    for i in range(n + 2):
        shape = (side, side) if channels == 1 else (side, side, channels)
        name = f"img/{i:03d}.png"
        (folder / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        label = CLASSES[i % 2]
        if i < n:
            rows.append([name, "", "pool"])
            answers.append([name, label])
        else:
            rows.append([name, label, "val"])
    for file, header, body in (
        ("manifest.csv", ["path", "label", "split"], rows),
        ("answers.csv", ["path", "label"], answers),
    ):
        with open(folder / file, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(body)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pools")
    shapes = {"grey8": (8, 1), "grey28": (28, 1), "rgb32": (32, 3), "rgb64": (64, 3)}
    return {k: write_pool(root / k, side, c) for k, (side, c) in shapes.items()}


def test_presets_hold_method_keys_only():
    method = set(keys_in("method"))
    for preset in presets.PRESETS.values():
        assert set(preset.keys) <= method, preset.name
        Config().replace(**preset.keys)  # valid values
    assert presets.PRESETS["grey-tiny"].keys == {}  # the digits keep the defaults


@pytest.mark.parametrize(
    "pool, name",
    [("grey8", "grey-tiny"), ("grey28", "grey-small"), ("rgb32", "photo-small"),
     ("rgb64", "photo-large")],
)  # fmt: skip
def test_the_preset_is_picked_from_the_pool_images(pools, tmp_path, pool, name):
    data = load_dataset(f"manifest:{pools[pool]}", str(tmp_path / "data"))
    choice = presets.pick_preset(data)
    got, keys, reason = choice  # a (name, keys, reason) tuple
    assert got == name and keys == dict(presets.PRESETS[name].keys)
    side = int(pool[-2:].lstrip("y"))
    assert f"{side}x{side}x{data.x_train.shape[1]}, 12 images" in reason  # pool less val
    assert reason.endswith(".") and ". " not in reason  # one sentence


def test_presets_by_shape():
    assert presets.preset_name_for(1, 8, 8) == "grey-tiny"
    assert presets.preset_name_for(1, 28, 28) == "grey-small"
    assert presets.preset_name_for(3, 32, 32) == "photo-small"
    assert presets.preset_name_for(3, 16, 16) == "photo-small"
    assert presets.preset_name_for(1, 96, 96) == "photo-large"
    assert presets.preset_name_for(3, 224, 224) == "photo-large"


def test_init_applies_records_and_prints_the_preset(pools, tmp_path):
    project = init_project(tmp_path / "p", pools["rgb32"])
    keys = presets.PRESETS["photo-small"].keys
    assert {k: getattr(project.config, k) for k in keys} == dict(keys)
    entry = project.meta["source"]["preset"]
    assert entry["name"] == "photo-small" and entry["asked"] == "auto"
    assert entry["keys"] == dict(keys) and entry["overridden"] == []
    assert project.meta["source"]["kind"] == "defaults"
    last = project_summary(project).splitlines()[-1]
    shown = ", ".join(f"{k}={v}" for k, v in keys.items())
    assert (
        last
        == f"defaults for small colour photos (32x32x3, 12 images): preset photo-small: {shown}"
    )
    again = Project.open(tmp_path / "p")  # recorded in the project, not only in memory
    assert again.meta["source"]["preset"] == entry


def test_the_digits_keep_the_defaults(pools, tmp_path):
    project = init_project(tmp_path / "p", pools["grey8"])
    mine = {k: getattr(project.config, k) for k in keys_in("method")}
    assert mine == {k: getattr(Config(), k) for k in keys_in("method")}
    assert project.meta["source"]["preset"]["name"] == "grey-tiny"
    assert project_summary(project).endswith("preset grey-tiny: the defaults")


def test_the_users_keys_win_over_the_preset(pools, tmp_path):
    # --set wins
    project = init_project(tmp_path / "a", pools["rgb32"], overrides={"batch_size": 8})
    assert project.config.batch_size == 8
    assert project.config.epochs_scoring == presets.PRESETS["photo-small"].keys["epochs_scoring"]
    entry = project.meta["source"]["preset"]
    assert entry["overridden"] == ["batch_size"] and "batch_size" not in entry["keys"]
    assert "(yours instead: batch_size)" in project_summary(project)
    # a YAML file's keys win (only those it names), and --set wins over the YAML file
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"epochs_scoring": 5, "epochs_task": 7}))
    project = init_project(
        tmp_path / "b", pools["rgb32"], config=config, overrides={"epochs_task": 9}
    )
    assert (project.config.epochs_scoring, project.config.epochs_task) == (5, 9)
    assert project.config.batch_size == presets.PRESETS["photo-small"].keys["batch_size"]
    assert project.meta["source"]["preset"]["overridden"] == ["epochs_scoring", "epochs_task"]
    # a YAML file that names the key, even with the default's value
    config.write_text(yaml.safe_dump({"batch_size": 64}))
    project = init_project(tmp_path / "c", pools["rgb32"], config=config)
    assert project.config.batch_size == 64


def test_no_preset_or_a_named_one(pools, tmp_path):
    project = init_project(tmp_path / "a", pools["rgb32"], preset="none")
    assert project.config == Config().replace(
        dataset=project.config.dataset, data_dir=project.config.data_dir
    )
    assert project.meta["source"]["preset"] is None
    assert project_summary(project).splitlines()[-1].startswith("no preset")
    project = init_project(tmp_path / "b", pools["rgb32"], preset="grey-small")
    assert project.config.epochs_scoring == presets.PRESETS["grey-small"].keys["epochs_scoring"]
    assert project.meta["source"]["preset"]["asked"] == "grey-small"
    with pytest.raises(ConfigError, match="preset: unknown 'cifar'.*photo-small"):
        init_project(tmp_path / "c", pools["rgb32"], preset="cifar")
    assert not (tmp_path / "c").exists()


def test_the_decode_cache_lives_in_the_project(pools, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    project = init_project(tmp_path / "p", pools["rgb32"], overrides=TINY_ROUND)
    folder = tmp_path / "p"
    assert project.config.data_dir == str(folder)
    assert (folder / CACHE_DIR).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "work"]  # no scratch left
    assert list(work.iterdir()) == []
    # next, from another directory: the pool is not decoded again, nothing written there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def no_decode(*args):
        raise AssertionError("decoded the pool again")

    monkeypatch.setattr("pal.data.manifest._decode", no_decode)
    record = next_batch(Project.open(folder), 4)
    assert record.n == 4 and list(elsewhere.iterdir()) == []


def test_a_data_dir_of_the_user_is_kept(pools, tmp_path):
    project = init_project(
        tmp_path / "p", pools["grey8"], overrides={"data_dir": str(tmp_path / "d")}
    )
    assert project.config.data_dir == str(tmp_path / "d")
    assert (tmp_path / "d" / CACHE_DIR).is_dir() and not (tmp_path / "p" / CACHE_DIR).exists()


def test_a_full_folder_is_refused_before_decoding(pools, tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x").write_text("x")
    monkeypatch.setattr("pal.data.manifest._decode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ProjectError, match="not an empty folder"):
        init_project(tmp_path / "p", pools["grey8"])


def test_the_warning_is_one_line_naming_the_network_and_keys():
    text = underfit_message("train_accuracy", 0.81, 0.99, 2, Config(), "photo-small")
    assert text == (
        "round 2: the task network fits its training set at 0.810 (train_accuracy < "
        "fit_threshold 0.99): try --set epochs_task_max=240, --set batch_size=16, --set "
        "model_selection=last or the preset photo-small (pal label init --preset photo-small)"
    )
    cfg = Config(epochs_task_max=240, batch_size=16, model_selection="last")
    text = underfit_message("train_accuracy", 0.9, 0.99, 1, cfg)
    assert text.endswith("try --set epochs_task_max=480")
    text = underfit_message("scoring/rotation_train_accuracy", 0.435, 0.99, 1, Config())
    assert "the scoring network's rotation head fits its training set at 0.435" in text
    assert text.endswith(
        "try --set epochs_scoring=60, --set batch_size=16 or --set model_selection=last"
    )
    text = underfit_message("scoring/class_train_accuracy", 0.48, 0.99, 1, cfg)
    assert "the scoring network's class head" in text and text.endswith("--set epochs_scoring=60")
    assert "\n" not in text


def test_console_warnings_print_one_line(capsys):
    with pytest.warns(DeprecationWarning), console_warnings():
        warn_underfit("train_accuracy", 0.5, 0.99, 1, Config())
        warnings.warn("someone else's", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1  # not pal's: passed on to the warnings machinery (here pytest's)
    assert err[0].startswith("warning: round 1: the task network fits its training set at 0.500")
    assert "--set epochs_task_max=240" in err[0]
    with pytest.warns(UnderfitWarning):  # outside, the warning machinery is as it was
        warn_underfit("train_accuracy", 0.5, 0.99, 1)
    assert capsys.readouterr().err == ""


def test_console_warnings_on_a_console(tmp_path):
    """In a process of its own: pal's warning is one line, others keep their source line."""
    script = tmp_path / "w.py"
    script.write_text(
        "import warnings\n"
        "from pal.training import console_warnings, warn_underfit\n"
        "with console_warnings():\n"
        "    warn_underfit('scoring/class_train_accuracy', 0.48, 0.99, 3)\n"
        "    warnings.warn('not pal', UserWarning)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "warning: round 3: the scoring network's class head fits its training set at 0.480 "
        "(scoring/class_train_accuracy < fit_threshold 0.99): try --set epochs_scoring=60, "
        "--set batch_size=16 or --set model_selection=last"
    )
    assert "UserWarning: not pal" in lines[1] and "warnings.warn('not pal'" in lines[2]


def test_a_round_warns_with_the_pools_preset(pools, tmp_path):
    project = init_project(
        tmp_path / "p",
        pools["rgb32"],
        preset="none",
        overrides={**TINY_ROUND, "fit_threshold": 1.0},
    )
    answers = (pools["rgb32"].parent / "answers.csv").read_text().splitlines()
    (tmp_path / "some.csv").write_text("\n".join(answers[:9]) + "\n")  # 8 of the 12
    import_annotations(project, tmp_path / "some.csv")
    with pytest.warns(UnderfitWarning) as caught:
        record = next_batch(project, 2)
    texts = [str(w.message) for w in caught if issubclass(w.category, UnderfitWarning)]
    assert len(texts) == len(record.underfit) >= 1
    assert all("(pal label init --preset photo-small)" in t for t in texts)
