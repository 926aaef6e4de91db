"""The fast paths (bf16 autocast, channels-last, torch.compile) run on CPU too, and the benchmark
runs end to end. Speed itself is measured by ``python -m benchmarks``, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import pal
from pal.config import ConfigError
from pal.training import FitSpec, resolve_speed
from tests.conftest import FAST, REPO


def test_auto_is_fp32_and_contiguous_on_cpu():
    config = pal.make_config(FAST)
    assert resolve_speed(config, torch.device("cpu")) == (None, torch.contiguous_format)
    forced = config.replace(precision="bf16", memory_format="channels_last")
    assert resolve_speed(forced, torch.device("cpu")) == (torch.bfloat16, torch.channels_last)


def test_bad_speed_settings_name_the_field():
    with pytest.raises(ConfigError, match="^precision: must be one of"):
        pal.make_config(FAST, precision="fp8")
    with pytest.raises(ConfigError, match="^memory_format: must be one of"):
        pal.make_config(FAST, memory_format="nhwc")
    with pytest.raises(ConfigError, match="^compile: expected true or false"):
        pal.make_config(FAST, compile="yes")


@pytest.mark.parametrize("strategy", ["pal", "coreset", "dbal"])
def test_bf16_channels_last_round_trains_in_bf16_and_queries(strategy):
    config = pal.make_config(
        FAST, strategy=strategy, precision="bf16", memory_format="channels_last", dropout=0.3
    )
    convs = []  # (training?, output dtype, input in channels-last?) of every conv call

    def watch(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1:
            channels_last = inputs[0].is_contiguous(memory_format=torch.channels_last)
            convs.append((module.training, output.dtype, channels_last))

    handle = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        result = pal.run_experiment(config, tracking=False)
    finally:
        handle.remove()
    assert [r.n_labeled for r in result.rounds] == [40, 60, 80]
    selected = [i for r in result.rounds for i in r.selected]
    assert len(selected) == len(set(selected)) == 40
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in result.rounds)
    training = [c for c in convs if c[0]]
    evaluation = [c for c in convs if not c[0]]
    assert training and evaluation
    assert {dtype for _, dtype, _ in convs} == {torch.bfloat16}  # training and inference
    assert all(nhwc for _, _, nhwc in convs)


def test_bf16_training_learns_as_well_as_fp32():
    """Every step must see the weights the previous step left (autocast caches its bf16 copies
    of the weights for as long as its region lasts; the training loop clears them)."""
    config = pal.make_config(
        dataset="digits",
        pool_size=700,
        val_size=0,
        initial_size=400,
        rounds=0,
        epochs_task=12,
        device="cpu",
    )
    fp32 = pal.run_experiment(config, tracking=False).rounds[0].test_accuracy
    bf16 = pal.run_experiment(config, precision="bf16", tracking=False).rounds[0].test_accuracy
    assert fp32 > 0.8
    assert bf16 == pytest.approx(fp32, abs=0.05)


def test_bf16_gives_the_same_queries_for_the_same_seed():
    config = pal.make_config(FAST, precision="bf16", memory_format="channels_last")
    a = pal.run_experiment(config, tracking=False)
    b = pal.run_experiment(config, tracking=False)
    assert [r.selected for r in a.rounds] == [r.selected for r in b.rounds]


def test_compile_wraps_the_module_it_trains_and_shares_its_parameters():
    model = torch.nn.Linear(3, 2)
    assert FitSpec(epochs=1, lr=0.1, batch_size=2).forward(model) is model
    compiled = FitSpec(epochs=1, lr=0.1, batch_size=2, compile=True).forward(model)
    assert compiled is not model
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in model.parameters()}


@pytest.mark.slow
def test_compile_trains_a_round_on_cpu():
    config = pal.make_config(FAST, compile=True, rounds=0, epochs_task=1)
    eager = pal.run_experiment(config.replace(compile=False), tracking=False)
    compiled = pal.run_experiment(config, tracking=False)
    assert compiled.rounds[0].n_labeled == eager.rounds[0].n_labeled
    assert compiled.rounds[0].test_accuracy == pytest.approx(
        eager.rounds[0].test_accuracy, abs=0.05
    )


def test_benchmark_runs_and_writes_its_tables(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--config",
            "digits",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "digits-cpu.json").read_text())
    for phase in ("task_training", "scoring_training", "scoring", "bare_forward"):
        assert result["pal"][phase]["images_per_s"] > 0, phase
    for phase in ("task_training", "scoring_training", "scoring"):
        assert result["naive"][phase]["seconds"] > 0, phase
    assert result["pal"]["task_training"]["flops_per_image"] > 0
    assert result["pal"]["subquery_finetune"]["steps"] == 2  # K = 3
    assert 0 < result["pal"]["scoring_vs_bare_forward"] < 2
    assert result["speedup_vs_naive"] > 0 and result["machine"]["cpus"] >= 1
    table = (out / "digits-cpu.md").read_text()
    assert "| task training |" in table and "of the throughput of its bare forward" in table
    assert table in proc.stdout


def test_segmentation_benchmark_runs_and_writes_its_tables(tmp_path):
    out = tmp_path / "bench"
    argv = [sys.executable, "-m", "benchmarks", "--config", "digit_scenes", "--device", "cpu"]
    argv += ["--out", str(out), "--set", "epochs_task=1", "--set", "epochs_scoring=1"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "digit_scenes-cpu.json").read_text())
    for phase in ("task_training", "scoring_training", "scoring", "bare_forward"):
        assert result["pal"][phase]["images_per_s"] > 0, phase
    for phase in ("task_training", "scoring_training"):
        assert result["pal"][phase]["flops_per_image"] > 0, phase
    assert 0 < result["pal"]["scoring_vs_bare_forward"] < 2 and "naive" not in result
    table = (out / "digit_scenes-cpu.md").read_text()
    assert "(segmentation)" in table and "| scoring training |" in table
    assert table in proc.stdout
