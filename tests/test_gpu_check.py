"""``benchmarks/gpu_check.sh``: its table (every step's row, a reason for one that did not
run), its extrapolation of the CIFAR-10 protocol, its sizes, and the whole script at its tiny
size on the CPU. What a GPU measures is never asserted here."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO, SHARED_DATA


def _rows(table: str) -> dict[str, list[list[str]]]:
    """The table's rows by their step column: ``[check, result, detail, step time]``."""
    rows: dict[str, list[list[str]]] = {}
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith(("| step |", "| --- |")):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows.setdefault(cells[0], []).append(cells[1:])
    return rows


def test_report_names_each_step_that_failed_timed_out_or_never_ran(tmp_path):
    (tmp_path / "prepare.json").write_text(
        json.dumps({"machine": {"cpus": 2, "torch": "x"}, "rows": [["data", "1.0 s", "ok"]]})
    )
    (tmp_path / "prepare.status").write_text('{"rc": 0, "seconds": 3.0, "cap": 45}')
    (tmp_path / "mfu.status").write_text('{"rc": 124, "seconds": 60.0, "cap": 60}')
    (tmp_path / "scoring_ratio.status").write_text('{"rc": 1, "seconds": 2.0, "cap": 45}')
    (tmp_path / "protocol_round.status").write_text('{"rc": null, "skipped": "no time left"}')
    text = gpu_check.report(tmp_path, tiny=False)
    rows = _rows(text)
    assert list(rows) == list(gpu_check.TITLES.values())
    assert rows["0. data"] == [["data", "1.0 s", "ok", "3 s"]]
    assert rows["1. MFU"][0][1].startswith("failed: timed out after its cap of 60 s")
    assert rows["2. scoring vs bare forward"][0][1].startswith("failed: exit status 1")
    assert rows["3. CIFAR-10 protocol"][0][1].startswith("not run")
    assert rows["5. GPU packing"][0][1].startswith("not run")
    assert (tmp_path / "gpu_check.md").read_text() == text
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["total_seconds"] == pytest.approx(65.0)
    assert summary["steps"]["mfu"]["status"]["rc"] == 124


def test_protocol_extrapolation_adds_up_the_rounds():
    """Rates of 1 s per image (and per image and epoch): every term of a round can be counted
    by hand."""
    phases = {
        "task_training": {"seconds": 20.0},
        "scoring_training": {"seconds": 20.0},
        "scoring": {"seconds": 30.0},
        "evaluation": {"seconds": 5.0, "images": 5},
        "subquery_finetune": {"seconds": 2.0},
    }
    sizes = {"n_train": 110, "n_test": 5, "labeled": 10, "unlabeled": 30, "val": 5}
    protocol = {
        "val_size": 10,
        "initial_size": 10,
        "initial_fraction": 0.1,
        "query_size": 20,
        "query_fraction": 0.05,
        "rounds": 1,
        "epochs_task": 3,
        "epochs_scoring": 4,
        "val_checks": 2,
        "model_selection": "best_val",
    }
    config = {"epochs_task": 2, "epochs_scoring": 2}
    epochs = {"task": 10.0, "scoring": None}  # scoring: its whole time over its epochs
    estimate = gpu_check.extrapolate(phases, epochs, sizes, config, protocol)
    assert estimate["budget"] == 100 and estimate["labeled"] == [10, 30]
    test = gpu_check.PROTOCOL_TEST
    # round 0: training 3 x 10, 2 checks of 10, evaluation of 10 + test + 10; query: scoring
    # training 4 x 10, 2 checks of 10, the fit on 10 + 10 and the scoring of 90, sub-queries 2
    round0 = 3 * 10 + 2 * 10 + (10 + test + 10) + 4 * 10 + 2 * 10 + (10 + 10 + 90) + 2
    round1 = 3 * 30 + 2 * 10 + (10 + test + 30)  # the last round: no query
    assert estimate["round_seconds"] == pytest.approx([round0, round1])
    assert estimate["protocol_seconds"] == pytest.approx(round0 + round1)


def test_sizes_are_read_from_the_environment(monkeypatch):
    assert gpu_check.size("MFU_IMAGES", tiny=True) == gpu_check.SIZES["MFU_IMAGES"][1]
    monkeypatch.setenv("GPU_CHECK_MFU_IMAGES", "24")
    monkeypatch.setenv("GPU_CHECK_RATIO_BATCHES", "32 64")
    assert gpu_check.size("MFU_IMAGES", tiny=False) == 24
    assert gpu_check.ints(gpu_check.size("RATIO_BATCHES", tiny=True)) == [32, 64]


def test_the_wrapper_stops_without_the_dataset(tmp_path):
    # a subprocess on purpose: what is tested is the shell wrapper's exit status and message
    env = {**os.environ, "GPU_CHECK_DATA": str(tmp_path / "absent.tar.gz")}
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--tiny", "--out", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no CIFAR-10" in proc.stderr


@pytest.mark.slow
def test_tiny_gpu_check_on_the_cpu_has_every_steps_row_with_numbers(tmp_path):
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (only developer machines have ../shared/data)")
    out = tmp_path / "check"
    # a subprocess on purpose: what is tested is the shell script as a user runs it (each step a
    # process of its own under its time cap, its status files, the table it assembles)
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    argv = ["bash", "benchmarks/gpu_check.sh", "--tiny", "--device", "cpu", "--out", str(out)]
    argv += ["--dataset", str(archive)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout
    rows = _rows(table)
    assert list(rows) == list(gpu_check.TITLES.values())
    for step, step_rows in rows.items():
        for check, result, detail, took in step_rows:
            assert not result.startswith(("failed", "not run")), (step, result)
            if step == "5. GPU packing" and not torch.cuda.is_available():
                assert result == "skipped: no CUDA GPU on this machine"
                continue
            figures = result if re.search(r"\d", result) else detail  # MFU on a CPU: no peak
            assert re.search(r"\d", figures), (step, check, result, detail)
            assert re.fullmatch(r"\d+ s", took), (step, took)
    assert len(rows["1. MFU"]) == 2  # task and scoring training, one batch size
    assert len(rows["2. scoring vs bare forward"]) == 2  # two eval batch sizes
    assert len(rows["3. CIFAR-10 protocol"]) == 3

    summary = json.loads((out / "gpu_check.json").read_text())
    steps = summary["steps"]
    assert all(s["status"]["rc"] == 0 for s in steps.values())
    for r in steps["mfu"]["results"]:
        assert r["flop_per_s"] > 0 and r["images_per_s"] > 0 and r["precision"] == "bf16"
    assert all(r["ratio"] > 0 for r in steps["scoring_ratio"]["results"])
    estimate = steps["protocol_round"]["estimate"]
    assert estimate["protocol_seconds"] > estimate["round0_seconds"] > 0
    assert estimate["labeled"] == [4500 + 2250 * r for r in range(7)]  # the paper's protocol
    for run in steps["bf16_accuracy"]["runs"].values():
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["seconds"] > 0
