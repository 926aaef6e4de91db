"""``pal label``: the README's walk-through on the digits demo, bad imports, kills and locks.

Every command runs through ``pal.cli.main`` (or a subprocess of the ``pal`` command where a
process is killed) against a real MLflow server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

import pal
from pal.cli import main
from pal.labeling.demo import write_demo
from pal.labeling.project import Project, ProjectBusyError
from tests.fast import FAST_LABEL
from tests.helpers import fail_writes_of, read_csv, studio_export


def tree_digest(folder: Path, leave_out: str | None = None) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` but ``leave_out``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != leave_out
    }


def ledger(project: Path) -> list[dict[str, str]]:
    return read_csv(project / "labels.csv")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder)
    return folder


def make_project(tmp_path: Path, demo: Path, *extra: str) -> Path:
    project = tmp_path / "proj"
    assert main(["label", "init", str(project), "--pool", str(demo / "manifest.csv"), *FAST_LABEL,
                 "--set", f"data_dir={tmp_path / 'data'}", *extra]) == 0  # fmt: skip
    return project


@pytest.mark.slow
def test_walkthrough_three_rounds(tmp_path, demo, mlflow_server):
    project = make_project(tmp_path, demo)
    offered: list[str] = []
    ledgers = [ledger(project)]
    pool = {r["path"] for r in read_csv(demo / "manifest.csv") if r["split"] == "pool"}
    for r in (1, 2, 3):
        argv = ["label", "next", str(project), "--n", "20", "--quiet"]
        assert main([*argv, "--tracking-uri", mlflow_server]) == 0
        batch = read_csv(project / "rounds" / f"{r:03d}" / "batch.csv")
        paths = [row["path"] for row in batch]
        labeled_before = {row["path"] for row in ledgers[-1]}
        assert len(paths) == 20 and not set(paths) & set(offered)  # no path offered twice
        assert set(paths) <= pool - labeled_before  # only unlabeled pool images
        offered += paths
        info = json.loads((project / "rounds" / f"{r:03d}" / "round.json").read_text())
        assert info["label_free"] == (r == 1) and info["logged"] is True
        if r > 1:  # a task network: predictions as pre-annotations
            assert all(row["predicted"] for row in batch)
            tasks = json.loads((project / "rounds" / f"{r:03d}" / "tasks.json").read_text())
            assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [
                batch[0]["predicted"]
            ]
        export = tmp_path / f"export{r}.json"
        export.write_text(json.dumps(studio_export(project, demo / "answers.csv", r)))
        assert main(["label", "import", str(project), str(export)]) == 0
        ledgers.append(ledger(project))
        assert ledgers[-1][: len(ledgers[-2])] == ledgers[-2]  # the ledger only grows
        assert len(ledgers[-1]) == len(ledgers[-2]) + 20
    truth = {row["path"]: row["label"] for row in read_csv(demo / "answers.csv")}
    assert all(row["label"] == truth[row["path"]] for row in ledgers[-1])

    client = MlflowClient(mlflow_server)
    runs = client.search_runs(
        [client.get_experiment_by_name("pal-label").experiment_id],
        f"tags.`pal.project` = '{project}'",
    )
    assert len(runs) == 1  # one run per project, each round once
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "n_labeled")]
    assert sorted(steps) == [1, 2, 3]
    history = client.get_metric_history(runs[0].info.run_id, "n_labeled")
    assert sorted(m.value for m in history) == [0.0, 20.0, 40.0]
    assert "val_accuracy" in runs[0].data.metrics
    # a labeling project's run starts another project with its method, not its pool
    from pal.config import keys_in
    from pal.labeling.setup import init_project

    again = init_project(tmp_path / "again", demo / "manifest.csv", from_run=runs[0].info.run_id,
                         tracking_uri=mlflow_server)  # fmt: skip
    first = Project.open(project).config
    assert all(getattr(again.config, k) == getattr(first, k) for k in keys_in("method"))
    assert again.config.seed == pal.Config().seed

    assert main(["label", "status", str(project)]) == 0
    assert (project / "status.png").stat().st_size > 0
    out = tmp_path / "labeled.csv"
    assert main(["label", "export", str(project), str(out)]) == 0
    exported = read_csv(out)
    assert sum(r["split"] == "pool" for r in exported) == 60
    from pal.data import load_dataset

    data = load_dataset(f"manifest:{out}", str(tmp_path / "data"))
    assert data.n_unknown == 0 and len(data.x_train) == 60 + 100


def test_next_refuses_while_last_batch_unlabeled_and_force_offers_new_images(tmp_path, demo):
    project = make_project(tmp_path, demo)
    argv = ["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]
    assert main(argv) == 0
    before = tree_digest(project)
    assert main(argv) == 2  # refused: nothing labeled yet
    assert tree_digest(project) == before
    assert main([*argv, "--force"]) == 0
    first = {r["path"] for r in read_csv(project / "rounds/001/batch.csv")}
    second = {r["path"] for r in read_csv(project / "rounds/002/batch.csv")}
    assert len(second) == 10 and not first & second


def test_label_free_first_batch_by_pal_and_refused_for_entropy(tmp_path, demo):
    project = make_project(tmp_path, demo)
    base = ["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]
    assert main([*base, "--strategy", "entropy"]) == 2
    assert not (project / "rounds" / "001").exists()
    assert main([*base, "--strategy", "pal"]) == 0
    info = json.loads((project / "rounds/001/round.json").read_text())
    assert info["strategy"] == "pal" and info["label_free"]
    batch = read_csv(project / "rounds/001/batch.csv")
    assert "s_s" in batch[0] and "s_c" not in batch[0]  # no class head without labels


def test_bad_imports_leave_the_project_unchanged(tmp_path, demo):
    project = make_project(tmp_path, demo)
    assert main(["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]) == 0
    batch = [r["path"] for r in read_csv(project / "rounds/001/batch.csv")]
    val = next(r["path"] for r in read_csv(demo / "manifest.csv") if r["split"] == "val")
    bad = {
        "unknown_path.csv": f"path,label\n{batch[0]},3\nimages/nope.png,4\n",
        "unknown_class.csv": f"path,label\n{batch[0]},3\n{batch[1]},eleven\n",
        "malformed.csv": f"path,label\n{batch[0]},3\n{batch[1]},\n",
        "val_image.csv": f"path,label\n{batch[0]},3\n{val},1\n",
        "not_json.json": "{not json",
        "wrong_header.csv": "file,class\na.png,1\n",
    }
    before = tree_digest(project)
    for name, text in bad.items():
        f = tmp_path / name
        f.write_text(text)
        assert main(["label", "import", str(project), str(f)]) == 2, name
        assert tree_digest(project) == before, name


def test_import_is_idempotent_and_skipped_tasks_are_never_offered_again(tmp_path, demo):
    project = make_project(tmp_path, demo)
    argv = ["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]
    assert main(argv) == 0
    batch = [r["path"] for r in read_csv(project / "rounds/001/batch.csv")]
    export = tmp_path / "export.json"
    skip = set(batch[:3])
    export.write_text(json.dumps(studio_export(project, demo / "answers.csv", 1, skip)))
    assert main(["label", "import", str(project), str(export)]) == 0
    once = (project / "labels.csv").read_bytes()
    rows = ledger(project)
    assert sum(r["status"] == "skipped" for r in rows) == 3
    assert sum(r["status"] == "labeled" for r in rows) == 7
    assert main(["label", "import", str(project), str(export)]) == 0
    assert (project / "labels.csv").read_bytes() == once  # twice changes nothing
    assert main(argv) == 0  # the batch is done: labeled or skipped
    second = {r["path"] for r in read_csv(project / "rounds/002/batch.csv")}
    assert not second & set(batch)
    info = json.loads((project / "rounds/002/round.json").read_text())
    assert (info["task_epochs"], info["task_fit_attempts"]) == (3, 1)  # epochs_task, once


def test_a_round_trains_its_task_network_until_it_fits_or_the_cap(tmp_path, demo):
    # fit_threshold 1.0: a few SGD steps on ten images never fit them all, so every doubling up
    # to epochs_task_max (3, then 6) is tried and the fit check reports the kept network
    project = make_project(
        tmp_path, demo, "--set", "epochs_task_max=6", "--set", "fit_threshold=1.0"
    )
    argv = ["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]
    assert main(argv) == 0  # label-free: no task network yet
    export = tmp_path / "export.json"
    export.write_text(json.dumps(studio_export(project, demo / "answers.csv", 1)))
    assert main(["label", "import", str(project), str(export)]) == 0
    assert main(argv) == 0
    info = json.loads((project / "rounds/002/round.json").read_text())
    assert (info["task_epochs"], info["task_fit_attempts"]) == (6, 2)
    assert 1 <= info["task_epoch"] <= 6
    assert info["train_accuracy"] < 1.0 and "train_accuracy" in info["underfit"]


def test_a_second_command_is_refused_while_one_holds_the_lock(tmp_path, demo, capsys):
    project = make_project(tmp_path, demo)
    assert not Project.open(project).busy()
    with Project.open(project).lock():
        with (
            pytest.raises(ProjectBusyError, match="another pal label command"),
            Project.open(project).lock(),
        ):
            pass
        assert main(["label", "next", str(project), "--n", "5", "--no-tracking"]) == 2
        assert Project.open(project).busy()
        # status only reads files that are replaced whole: it answers, and says what runs
        capsys.readouterr()
        assert main(["label", "status", str(project)]) == 0
        assert "a pal label command is running on this project" in capsys.readouterr().out
    assert not Project.open(project).busy()


def test_a_write_failing_midway_leaves_no_round(tmp_path, demo, monkeypatch):
    import pal.labeling.project as project_module

    project = make_project(tmp_path, demo)
    before = tree_digest(project)
    real = fail_writes_of(monkeypatch, "round.json")
    with pytest.raises(OSError, match="disk full"):
        main(["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"])
    assert tree_digest(project) == before
    assert not [p for p in (project / "rounds").iterdir()]
    monkeypatch.setattr(project_module, "write_atomic", real)
    assert main(["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]) == 0


@pytest.mark.slow
def test_next_killed_midway_leaves_the_project_as_it_was(tmp_path, demo):
    project = make_project(tmp_path, demo)
    before = tree_digest(project)
    cmd = [sys.executable, "-m", "pal", "label", "next", str(project), "--n", "10",
           "--no-tracking", "--strategy", "pal", "--set", "epochs_scoring=400"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "choosing the batch" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.read(32) or ""
    assert "choosing the batch" in seen, seen  # killed while the scoring network trains
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # what it was doing (.next.json, for status) is no part of the project: the next command
    # removes it
    assert tree_digest(project, leave_out=".next.json") == before
    assert main(["label", "next", str(project), "--n", "10", "--quiet", "--no-tracking"]) == 0
    assert len(read_csv(project / "rounds/001/batch.csv")) == 10
    assert not (project / ".next.json").exists()


def test_init_from_sweep_takes_the_method_and_leaves_the_data_and_budget(tmp_path, demo):
    from pal.tracking import finish_sweep_run, resolve_tracking_uri, start_sweep_run

    uri = resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    best = {
        "dataset": "cifar10",
        "pool_size": 20000,
        "rounds": 7,
        "seed": 4,
        "strategy": "pal",
        "lambda1": 0.37,
        "lambda2": 0.5,
        "subqueries": 3,
        "lr_scoring": 0.02,
        "optimizer": "adam",
        "score_norm": "zscore",
        # the sweep's cluster: the machine's, not the method's
        "device_budget_gb": 2.0,
        "distributed_min_pool": 1000,
        "distributed_workers": 4,
        "candidate_pool": 500,
        "precision": "bf16",
    }
    run_id = start_sweep_run(uri, "pal-sweeps", "shoes_hpo", {"base": {}})
    finish_sweep_run(uri, run_id, {"best_config": best, "best_val_auc": 0.9, "trials": 4}, None)
    project = tmp_path / "proj"
    argv = ["label", "init", str(project), "--pool", str(demo / "manifest.csv"),
            "--from-sweep", "shoes_hpo", "--tracking-uri", uri]  # fmt: skip
    assert main(argv) == 0
    opened = Project.open(project)
    cfg = opened.config
    assert (cfg.lambda1, cfg.lambda2, cfg.subqueries, cfg.optimizer) == (0.37, 0.5, 3, "adam")
    assert (cfg.lr_scoring, cfg.score_norm) == (0.02, "zscore")
    assert cfg.dataset == f"manifest:{(demo / 'manifest.csv').resolve()}"
    assert (cfg.pool_size, cfg.rounds, cfg.seed) == (None, 6, 0)  # the defaults, not the sweep's
    default = pal.Config()
    machine = ("device_budget_gb", "distributed_min_pool", "distributed_workers", "candidate_pool")
    assert all(getattr(cfg, k) == getattr(default, k) for k in (*machine, "precision"))
    source = dict(opened.meta["source"])
    preset = source.pop("preset")
    assert source == {"kind": "sweep", "name": "shoes_hpo", "run_id": run_id, "tracking_uri": uri}
    assert preset["name"] == "grey-tiny" and preset["keys"] == {}  # the sweep's keys rule
    assert main(["label", "init", str(tmp_path / "p2"), "--pool", str(demo / "manifest.csv"),
                 "--from-sweep", "no_such_sweep", "--tracking-uri", uri]) == 2  # fmt: skip
    assert not (tmp_path / "p2").exists()


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "docs" / "labeling.md").read_text()
    start = readme.index("```bash\npal label demo")
    script = readme[start + len("```bash\n") : readme.index("```", start + 7)]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    project = tmp_path / "digits"
    assert sorted(p.name for p in (project / "rounds").iterdir()) == ["001", "002", "003"]
    rows = ledger(project)
    assert len(rows) == 150 and {r["status"] for r in rows} == {"labeled"}
    assert sum(r["split"] == "pool" for r in read_csv(tmp_path / "labeled.csv")) == 150
    assert "stopping signal" in done.stdout


def test_the_same_ledger_and_seed_give_the_same_batch(tmp_path, demo):
    batches = []
    for name in ("a", "b"):
        project = make_project(tmp_path / name, demo)
        argv = ["label", "next", str(project), "--n", "12", "--quiet", "--no-tracking"]
        assert main(argv) == 0
        batches.append((project / "rounds/001/batch.csv").read_bytes())
    assert batches[0] == batches[1]
    assert len(batches[0].decode().splitlines()) == 13
