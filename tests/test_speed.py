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
from tests.conftest import FAST, REPO, SHARED_DATA


@pytest.mark.parametrize("units", [False, True])
def test_auto_on_cpu_is_bf16_only_with_bf16_units_once_every_strategy_held(monkeypatch, units):
    from pal import training
    from pal.strategies import STRATEGIES

    cpu, fp32 = torch.device("cpu"), (None, torch.contiguous_format)
    bf16 = (torch.bfloat16, torch.channels_last)
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: units)
    every = frozenset(STRATEGIES)
    config = pal.make_config(FAST, strategy="random")
    monkeypatch.setattr(training, "CPU_BF16_STRATEGIES", every - {"vaal"})
    assert not training.cpu_bf16_proven()
    assert resolve_speed(config, cpu) == fp32  # not one precision for random, another for vaal
    monkeypatch.setattr(training, "CPU_BF16_STRATEGIES", every)
    assert training.cpu_bf16_proven()
    assert resolve_speed(config, cpu) == (bf16 if units else fp32)
    assert resolve_speed(config, cpu, kind="segmentation") == fp32
    assert resolve_speed(config.replace(precision="fp32"), cpu) == fp32
    monkeypatch.setattr(training, "CPU_BF16_STRATEGIES", frozenset())
    forced = config.replace(precision="bf16", memory_format="channels_last")
    assert resolve_speed(forced, cpu) == bf16  # asked for, it is on whatever the CPU
    assert resolve_speed(config.replace(precision="bf16"), cpu) == (
        bf16 if units else (torch.bfloat16, torch.contiguous_format)
    )


def test_cpu_bf16_units_are_read_from_torch():
    from pal.training import cpu_has_bf16

    expected = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert cpu_has_bf16() == expected


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


WHOLE_ROUND_PHASES = ("task_training", "scoring_training", "scoring", "finetunes", "rescoring")


def _whole_round_checks(result: dict, table: str, steps: int) -> None:
    """What a whole-round result must hold: every phase on both sides, the sub-query steps, the
    whole round as the sum of its phases, its speed-up and the re-scoring ratio."""
    pal_r, naive_r, whole = result["pal"], result["naive"], result["whole_round"]
    for phase in WHOLE_ROUND_PHASES:
        assert pal_r[phase]["seconds"] > 0 and naive_r[phase]["seconds"] > 0, phase
    assert pal_r["finetunes"]["steps"] == naive_r["finetunes"]["steps"] == steps
    assert pal_r["rescoring"]["steps"] == naive_r["rescoring"]["steps"] == steps
    assert whole["pal_seconds"] == pytest.approx(
        sum(pal_r[p]["seconds"] for p in WHOLE_ROUND_PHASES)
    )
    assert whole["naive_seconds"] == pytest.approx(
        sum(naive_r[p]["seconds"] for p in WHOLE_ROUND_PHASES)
    )
    assert whole["speedup"] > 0
    assert whole["target"] == {"fp32": 2.5, "bf16": 4.0}[result["precision"]]
    assert pal_r["rescoring_vs_bare_forward"] > 0
    assert pal_r["rescoring_bare_forward"]["images"] == pal_r["rescoring"]["images"]
    assert f"| sub-query fine-tunes ({steps}) |" in table
    assert f"| re-scorings of the remaining pool ({steps}) |" in table
    assert "| **whole round** |" in table and "(target: >= 85%" in table


def _whole_round(tmp_path, config: str, settings: tuple[str, ...], *flags: str):
    """``python -m benchmarks --config CONFIG`` on CPU with ``--set`` ``settings``: the process,
    its JSON result and its Markdown table."""
    out = tmp_path / "bench"
    argv = [sys.executable, "-m", "benchmarks", "--config", config, "--device", "cpu"]
    argv += ["--out", str(out), "--threads", "2", *flags]
    for setting in settings:
        argv += ["--set", setting]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / f"{config}-cpu.json").read_text())
    return proc, result, (out / f"{config}-cpu.md").read_text()


def test_whole_round_benchmark_times_the_subqueries_on_both_sides(tmp_path):
    """``--whole-round`` on the digits: the sub-query fine-tunes and re-scores of both loops."""
    settings = ("pool_size=400", "initial_size=100", "epochs_task=1", "epochs_scoring=1")
    settings += ("finetune_scope=all", "finetune_start=restart", "finetune_epochs=1")
    proc, result, table = _whole_round(tmp_path, "digits", settings, "--whole-round")
    _whole_round_checks(result, table, steps=2)  # K = 3
    assert result["pal"]["subquery_finetune"]["start"] == "restart"
    assert table in proc.stdout


@pytest.mark.slow
def test_cifar10_tv_whole_round_at_a_tiny_size(tmp_path):
    """The ``cifar10_tv`` config (torchvision's VGG-16 / ResNet-18, the whole scoring network
    fine-tuned before every sub-query) at a tiny size: every phase of the whole round."""
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (only developer machines have ../shared/data)")
    settings = ("pool_size=100", "val_size=16", "initial_size=16", "query_size=10")
    settings += ("epochs_task=1", "epochs_scoring=1", "finetune_epochs=1")
    proc, result, table = _whole_round(tmp_path, "cifar10_tv", settings)
    _whole_round_checks(result, table, steps=4)  # K = 5
    settings = result["settings"]
    assert (settings["task_backbone"], settings["scoring_backbone"]) == ("vgg16_tv", "resnet18_tv")
    assert result["pal"]["subquery_finetune"]["scope"] == "all"
    # D_L: the first 16 of the experiment's unlabeled pool (100 less 16 validation images and
    # its own initial 16), D_U: the rest
    assert result["pal"]["n_labeled"] == 16 and result["pal"]["n_unlabeled"] == 100 - 16 - 2 * 16
    assert table in proc.stdout


def test_benchmark_refuses_a_round_whose_pool_is_smaller_than_the_query(tmp_path, capsys):
    from benchmarks.__main__ import main

    # 200 - 50 validation = 150; D_L and the experiment's initial pool take 60 each: 30 < 50
    argv = ["--config", "digits", "--device", "cpu", "--out", str(tmp_path)]
    argv += ["--set", "pool_size=200", "--set", "initial_size=60", "--set", "query_size=50"]
    assert main(argv) == 2
    assert "D_U would hold 30 images, fewer than the query of 50" in capsys.readouterr().err


@pytest.mark.slow
def test_growth_benchmark_measures_every_placement_and_a_streamed_round(tmp_path):
    from benchmarks.growth import run_growth

    out = tmp_path / "growth"
    cases = [(300, 8, ["resident", "streamed", "mapped", "ray-2"])]
    result = run_growth(
        out, "cpu", cases=cases, round_sizes=(400, 900),
        round_side=8,
    )  # fmt: skip
    modes = {r["mode"]: r for r in result["scoring"]}
    assert set(modes) == {"resident", "streamed", "mapped", "ray-2"}
    assert modes["resident"]["placement"] == "resident"
    assert {modes[m]["placement"] for m in ("streamed", "mapped", "ray-2")} == {"streamed"}
    for r in result["scoring"]:
        assert r["images_per_s"] > 0 and r["peak_rss_mib"] >= r["baseline_rss_mib"] > 0
        assert 0 < r["peak_anon_mib"] <= r["peak_rss_mib"]
    small_resident, small_streamed, large, mapped = result["rounds"]
    assert (small_resident["placement"], small_streamed["placement"]) == ("resident", "streamed")
    assert large["placement"] == "streamed" and large["budget_gb"] * 2**30 < 900 * 3 * 64
    assert mapped["placement"] == "streamed" and (large["mapped"], mapped["mapped"]) == (0, 1)
    assert result["same_query_resident_vs_streamed"] is True
    assert result["same_query_memory_vs_mapped"] is True
    table = (out / "growth-cpu.md").read_text()
    assert "| 300 | 8x8 |" in table and "Same query resident and streamed: yes" in table
    assert "in memory and memory-mapped: yes" in table and "streamed, memory-mapped" in table
    assert (out / "growth-cpu.png").stat().st_size > 0
    # an interrupted run goes on from its finished measurements: none is run again here
    lines = (out / "growth-cpu-cases.jsonl").read_text().splitlines()
    assert len(lines) == 4 + 4
    again = run_growth(
        out, "cpu", cases=cases, round_sizes=(400, 900),
        round_side=8, resume=True, timeout=0.001,
    )  # fmt: skip
    assert again["scoring"] == result["scoring"] and again["rounds"] == result["rounds"]


def test_prefilter_benchmark_compares_each_candidate_pool_with_the_whole_pool(tmp_path):
    out = tmp_path / "prefilter"
    argv = [sys.executable, "-m", "benchmarks.prefilter", "--config", "configs/digits.yaml",
            "--strategy", "entropy", "--seeds", "0", "--sizes", "200", "40", "--out", str(out),
            "--set", "dataset=digits", "--set", "epochs_task=2", "--set", "pool_size=600",
            "--set", "initial_size=40", "--set", "query_size=20"]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "prefilter-entropy.json").read_text())
    rows = {r["candidate_pool"]: r for r in result["rows"]}
    assert set(rows) == {200, 40}
    for r in rows.values():
        assert 0 <= r["kept"] <= r["reachable"] <= 1  # it keeps only what it could see
        assert r["full_round1_test_accuracy"] == rows[200]["full_round1_test_accuracy"]
    assert rows[40]["reachable"] < 1  # 40 of 520 candidates cannot hold the whole query
    assert "| 40 |" in (out / "prefilter-entropy.md").read_text()
