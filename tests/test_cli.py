"""The ``pal`` console script: ``pal list`` and ``pal run``, in-process and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pal
import pal.tasks
from pal.cli import main
from pal.config import field_names, parse_override

REPO = Path(__file__).resolve().parents[1]
DIGITS_YAML = str(REPO / "configs" / "digits.yaml")
PAL_EXE = Path(sys.executable).parent / "pal"


def pal_command() -> list[str]:
    """The installed console script, or the module when the venv has no script."""
    return [str(PAL_EXE)] if PAL_EXE.is_file() else [sys.executable, "-m", "pal.cli"]


@pytest.fixture
def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        pytest.fail("training started although the command line is invalid")

    monkeypatch.setattr(pal.tasks, "train_classifier", forbidden)


def listing(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.strip().splitlines():
        what, _, names = line.partition(": ")
        out[what] = names.split(", ")
    return out


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the round table ``pal run`` prints (after the header and its rule)."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("round "))
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = []
    for line in lines[header + 2 :]:
        if not line.strip() or line.startswith(("wrote ", "* ")):  # "* ": the underfit note
            break
        rows.append(line.split())
    return rows


# ---------------------------------------------------------------------------------- pal list
def test_list_prints_datasets_strategies_backbones_and_keys(capsys):
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    got = listing(captured.out)
    assert list(got) == [
        "datasets",
        "strategies",
        "backbones",
        "segmentation backbones",
        "segmentation strategies",
        "config keys",
    ]
    assert got["segmentation backbones"] == ["mobilenetv2", "segcnn"]
    assert got["segmentation strategies"] == ["entropy", "pal", "random"]
    assert {"digit_scenes", "cityscapes"} <= set(got["datasets"])
    assert {"digits", "cifar10", "svhn", "caltech101", "npz:PATH", "folder:PATH"} <= set(
        got["datasets"]
    )
    assert {"random", "entropy", "pal"} <= set(got["strategies"])
    assert {"cnn", "resnet18", "resnet18_tv", "vgg16", "vgg16_tv"} <= set(got["backbones"])
    assert got["config keys"] == field_names()
    assert {"lambda1", "lambda2", "subqueries", "missing_classes"} <= set(got["config keys"])
    assert captured.err == ""


def test_list_via_the_installed_script(tmp_path):
    proc = subprocess.run(
        [*pal_command(), "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = listing(proc.stdout)
    assert got["strategies"] == pal.list_strategies()
    assert got["backbones"] == pal.list_backbones()
    assert got["config keys"] == field_names()


# ----------------------------------------------------------------------------------- pal run
def test_run_digits_prints_the_table_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "OUT.json"  # the parent folder is created
    argv = ["run", "--config", DIGITS_YAML, "--quiet", "--output", str(out)]
    for item in ("rounds=1", "epochs_task=2", "epochs_scoring=2", "seed=3", "lambda2=0"):
        argv += ["--set", item]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "pal run: dataset=digits strategy=pal seed=3" in captured.out
    rows = table_rows(captured.out)
    assert [row[:2] for row in rows] == [["0", "120"], ["1", "180"]]
    assert f"wrote {out}" in captured.out
    assert "Traceback" not in captured.err

    result = json.loads(out.read_text())
    config = result["config"]
    assert config["seed"] == 3
    assert config["lambda2"] == 0.0 and isinstance(config["lambda2"], float)
    assert (config["rounds"], config["epochs_task"], config["epochs_scoring"]) == (1, 2, 2)
    assert config["batch_size"] == 32  # from digits.yaml (the default is 64)
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    query = 60  # 5% of the pool of 1300 - 100
    assert rounds[1]["n_labeled"] - rounds[0]["n_labeled"] == query
    assert len(rounds[1]["selected"]) == query and rounds[0]["selected"] == []
    assert result["classes"] == [str(i) for i in range(10)]
    for r in rounds:
        assert 0.0 <= r["test_accuracy"] <= 1.0


def test_set_missing_classes_parses_to_a_list(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "OUT.json"
    argv = ["run", "--config", DIGITS_YAML, "--quiet", "--output", str(out)]
    for item in ("missing_classes=[0,1]", "rounds=0", "epochs_task=1", "strategy=random"):
        argv += ["--set", item]
    assert main(argv) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["config"]["missing_classes"] == ["0", "1"]
    counts = result["rounds"][0]["labeled_class_counts"]
    assert counts["0"] == 0 and counts["1"] == 0 and sum(counts.values()) == 120


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("missing_classes=[0,1]", ("missing_classes", [0, 1])),
        ("missing_classes=cat", ("missing_classes", "cat")),
        ("lambda2=0", ("lambda2", 0)),
        ("lr_task=0.01", ("lr_task", 0.01)),
        ("lr_task=1e-3", ("lr_task", 0.001)),
        ("weight_decay=5E-4", ("weight_decay", 0.0005)),
        ("pool_size=null", ("pool_size", None)),
        ("dataset=npz:/data/mnist.npz", ("dataset", "npz:/data/mnist.npz")),
        ("download=true", ("download", True)),
        (" seed =4", ("seed", 4)),
    ],
)
def test_parse_override_reads_values_as_yaml(text, expected):
    assert parse_override(text) == expected


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lamda1=1", "pal: error: unknown config key(s) 'lamda1' (did you mean 'lambda1'?)"),
        ("rounds", "pal: error: --set expects KEY=VALUE, got 'rounds'"),
        ("lambda1=-1", "pal: error: lambda1: must be >= 0 (Eq. 3: lambda >= 0), got -1.0"),
        ("initial_fraction=2", "pal: error: initial_fraction: must be in (0, 1], got 2.0"),
        ("rounds=three", "pal: error: rounds: expected an integer, got 'three'"),
        ("optimizer=adamw", "pal: error: optimizer: must be one of ['sgd', 'adam']"),
        ("lambda1=[1", "pal: error: lambda1: cannot read value '[1'"),
        # needs the dataset: raised by Experiment.__init__, still before any training
        ("query_size=2000", "pal: error: query_size: initial pool 120 + rounds 6 x query 2000"),
        ("strategy=pall", "pal: error: strategy: unknown strategy 'pall'; choose one of"),
    ],
)
def test_bad_set_exits_2_naming_the_field(
    item, message, capsys, no_training, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "OUT.json"
    code = main(["run", "--config", DIGITS_YAML, "--set", item, "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()


def test_missing_config_file_exits_2_naming_it(tmp_path, capsys, no_training):
    path = tmp_path / "nope.yaml"
    assert main(["run", "--config", str(path)]) == 2
    assert f"pal: error: config: no such YAML file {str(path)!r}" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    for argv in (["run", "--set"], ["run", "--bogus"], ["frobnicate"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "usage: pal" in capsys.readouterr().err


def test_bad_set_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pal.cli", "run", "--config", DIGITS_YAML, "--set", "lamda1=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "pal: error: unknown config key(s) 'lamda1' (did you mean 'lambda1'?)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_run_is_tracked_in_mlflow_unless_told_not_to(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["run", "--config", DIGITS_YAML, "--quiet", "--tracking-uri", uri]
    for item in ("rounds=1", "epochs_task=1", "epochs_scoring=1", "lambda2=0"):
        argv += ["--set", item]
    assert main(argv + ["--output", str(tmp_path / "r.json")]) == 0
    run_id = json.loads((tmp_path / "r.json").read_text())["run_id"]
    assert f"MLflow run {run_id} (experiment 'pal') in {uri}" in capsys.readouterr().out
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lambda2"] == "0.0"
    steps = [m.step for m in client.get_metric_history(run_id, "test_accuracy")]
    assert sorted(steps) == [0, 1]

    assert main([*argv, "--no-tracking"]) == 0
    assert "MLflow run" not in capsys.readouterr().out
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_run_with_an_unusable_store_exits_2_before_training(capsys, no_training):
    argv = ["run", "--config", DIGITS_YAML, "--tracking-uri", "ftp://example.invalid/db"]
    assert main(argv) == 2
    assert "tracking_uri: unknown scheme 'ftp'" in capsys.readouterr().err


def test_the_command_line_starts_without_torch():
    """``pal --help`` answers before the deep-learning stack loads (benchmarks/startup.py times
    it); the names ``pal`` exports still load on first use."""
    code = (
        "import sys, pal.cli, pal, pal.labeling.cli;"
        "assert 'torch' not in sys.modules, 'torch';"
        "pal.Strategy, pal.UnderfitWarning;"
        "assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pal.nothing  # noqa: B018
    assert sorted(pal.__all__) == sorted(set(pal.__all__))
    assert all(getattr(pal, name) is not None for name in pal.__all__)
