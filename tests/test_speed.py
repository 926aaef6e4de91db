"""The fast paths (bf16 autocast, channels-last, torch.compile) run on CPU too, and the benchmark
runs end to end. Speed itself is measured by ``python -m benchmarks``, never asserted here."""

from __future__ import annotations

import json
import math

import pytest
import torch

import pal
from pal.config import ConfigError
from pal.training import FitSpec, resolve_speed
from tests.conftest import FAST, REPO, SHARED_DATA


@pytest.mark.parametrize("units", [False, True])
def test_auto_on_cpu_is_bf16_only_with_bf16_units_once_every_strategy_held(monkeypatch, units):
    from pal import training
    from pal.strategies import STRATEGIES, cpu_bf16_proven

    cpu, fp32 = torch.device("cpu"), (None, torch.contiguous_format)
    bf16 = (torch.bfloat16, torch.channels_last)
    monkeypatch.setattr(training.runtime, "cpu_has_bf16", lambda: units)
    config = pal.make_config(FAST, strategy="random")
    for name in STRATEGIES.names():  # every strategy held but VAAL
        monkeypatch.setattr(STRATEGIES.get(name), "cpu_bf16", name != "vaal")
    assert not cpu_bf16_proven()
    # not one precision for random, another for vaal
    assert resolve_speed(config, cpu, cpu_bf16_proven=cpu_bf16_proven()) == fp32
    assert training.Runtime.from_config(config, "classification", cpu_bf16_proven()).precision == (
        "fp32"
    )
    monkeypatch.setattr(STRATEGIES.get("vaal"), "cpu_bf16", True)
    assert cpu_bf16_proven()
    assert resolve_speed(config, cpu, cpu_bf16_proven=True) == (bf16 if units else fp32)
    assert resolve_speed(config, cpu, "segmentation", cpu_bf16_proven=True) == fp32
    assert resolve_speed(config.replace(precision="fp32"), cpu, cpu_bf16_proven=True) == fp32
    forced = config.replace(precision="bf16", memory_format="channels_last")
    assert resolve_speed(forced, cpu) == bf16  # asked for, it is on whatever the CPU
    assert resolve_speed(config.replace(precision="bf16"), cpu) == (
        bf16 if units else (torch.bfloat16, torch.contiguous_format)
    )


def test_strategies_say_whether_they_held_bf16_on_cpu():
    from pal.strategies import STRATEGIES, cpu_bf16_proven

    held = {n for n in STRATEGIES.names() if STRATEGIES.get(n).cpu_bf16}
    classification = {n for n in STRATEGIES.names() if "classification" in STRATEGIES.get(n).tasks}
    # docs/performance.md's precision studies: every classification strategy held
    assert held == classification >= {"random", "entropy", "coreset", "dbal", "pal", "vaal",
                                      "typiclust"}  # fmt: skip
    assert cpu_bf16_proven()


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

    experiment = pal.Experiment(config)
    handle = torch.nn.modules.module.register_module_forward_hook(watch)
    try:  # one round: the task network's training and evaluation, then the next query
        record = experiment.run_round()
    finally:
        handle.remove()
    assert record.n_labeled == 40 and 0.0 <= record.test_accuracy <= 1.0
    query = list(experiment.pool.pending.indices)
    assert len(query) == len(set(query)) == 20
    assert set(query) <= set(experiment.pool.unlabeled.tolist())
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
    """Round 0 trained in bf16 and the query after it, twice with one seed."""
    config = pal.make_config(FAST, precision="bf16", memory_format="channels_last")
    runs = []
    for _ in range(2):
        experiment = pal.Experiment(config)
        record = experiment.run_round()
        runs.append((record.test_accuracy, list(experiment.pool.pending.indices)))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) == 20


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


def _benchmark(tmp_path, capsys, config: str, *args: str) -> tuple[dict, str]:
    """``python -m benchmarks --config CONFIG --device cpu ARGS``, in-process: its JSON result
    and its Markdown table, which it printed too."""
    from benchmarks.__main__ import main

    out = tmp_path / "bench"
    assert main(["--config", config, "--device", "cpu", "--out", str(out), *args]) == 0
    table = (out / f"{config}-cpu.md").read_text()
    assert table in capsys.readouterr().out
    return json.loads((out / f"{config}-cpu.json").read_text()), table


def _table_rows(table: str) -> dict[str, list[str]]:
    """The Markdown table's rows by their first cell (the header row under ``"phase"``)."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def _check_phases(p: dict, images: dict[str, int]) -> None:
    """Each phase of a :func:`benchmarks.phases.run_phases` result timed ``images[phase]``
    images, at ``images / seconds`` per second (model FLOP/s likewise), all figures finite; the
    scoring ratio and the round are made of the phases' own seconds."""
    for phase, n in images.items():
        a = p[phase]
        assert a["images"] == n, phase
        assert math.isfinite(a["seconds"]) and a["images_per_s"] == pytest.approx(n / a["seconds"])
        if "flops_per_image" in a:  # counted, not timed: a network of any size does some
            assert math.isfinite(a["flops_per_image"]) and a["flops_per_image"] > 0, phase
            assert a["flop_per_s"] == pytest.approx(a["flops_per_image"] * n / a["seconds"])
    assert p["scoring_vs_bare_forward"] == pytest.approx(
        p["bare_forward"]["seconds"] / p["scoring"]["seconds"]
    )
    round_phases = ("task_training", "scoring_training", "scoring", "subquery_finetune")
    assert p["round_seconds"] == pytest.approx(sum(p[k]["seconds"] for k in round_phases))


def _naive_images(naive: dict, phase: str) -> float:
    """How many images the naive loop timed in ``phase`` (it reports seconds and a rate)."""
    return naive[phase]["images_per_s"] * naive[phase]["seconds"]


def test_benchmark_runs_and_writes_its_tables(tmp_path, capsys):
    result, table = _benchmark(tmp_path, capsys, "digits")
    pal_r, naive = result["pal"], result["naive"]
    # pool 1000 - 50 validation: D_L the first 300 of the 650 left after the initial 300
    assert (pal_r["n_labeled"], pal_r["n_unlabeled"]) == (300, 350)
    common = {"task_training": 2 * 300, "scoring_training": 2 * 300, "scoring": 350}
    _check_phases(pal_r, {**common, "bare_forward": 350})
    for phase, n in common.items():  # both loops timed the same work
        assert _naive_images(naive, phase) == pytest.approx(n), phase
    assert result["speedup_vs_naive"] == pytest.approx(
        sum(naive[p]["seconds"] for p in common) / sum(pal_r[p]["seconds"] for p in common)
    )
    assert pal_r["subquery_finetune"]["steps"] == 2  # K = 3
    assert result["machine"]["cpus"] >= 1
    rows = _table_rows(table.split("Each phase against its floor")[0])
    assert rows["phase"] == ["pal s", "pal images/s", "naive s", "naive images/s", "speed-up",
                             "model TFLOP/s", "MFU"]  # fmt: skip
    for phase in common:
        row = rows[phase.replace("_", " ")]
        assert len(row) == len(rows["phase"]), phase
        speedup = naive[phase]["seconds"] / pal_r[phase]["seconds"]
        assert row[0] == f"{pal_r[phase]['seconds']:.2f}" and row[4] == f"{speedup:.2f}x"
    assert "sub-query fine-tunes (2, scope head)" in rows
    assert f"**{result['speedup_vs_naive']:.2f}x** faster" in table
    assert "of the throughput of its bare forward" in table
    _check_floors(pal_r, table, ("task_training", "evaluation", "scoring_training", "scoring",
                                 "finetunes", "rescoring"))  # fmt: skip


def _check_floors(p: dict, table: str, phases: tuple[str, ...]) -> None:
    """Every phase of ``phases`` has its floor (``benchmarks.floor``): finite seconds, the
    share ``floor / pal`` of its own figures, a row of the floor table; the line under it names
    the training phases below the target."""
    from benchmarks.__main__ import FLOOR_ROWS, TRAINING_PHASES
    from benchmarks.floor import TARGET

    labels = dict((key, label) for label, key in FLOOR_ROWS)
    rows = _table_rows(table.split("Each phase against its floor")[1])
    for phase in phases:
        a = p[phase]
        assert math.isfinite(a["floor_seconds"]) and a["floor_seconds"] > 0, phase
        assert a["floor_share"] == pytest.approx(a["floor_seconds"] / a["seconds"]), phase
        assert rows[labels[phase]] == [
            f"{a['seconds']:.2f}",
            f"{a['floor_seconds']:.2f}",
            f"{a['floor_share']:.2f}",
        ], phase
    below = [k for k in TRAINING_PHASES if k in phases and p[k]["floor_share"] < TARGET]
    line = "all" if not below else "not " + ", ".join(k.replace("_", " ") for k in below)
    assert f"Training phases at >= {TARGET:g} of their floor: {line}." in table


def test_segmentation_benchmark_runs_and_writes_its_tables(tmp_path, capsys):
    result, table = _benchmark(
        tmp_path, capsys, "digit_scenes", "--set", "epochs_task=1", "--set", "epochs_scoring=1"
    )
    assert "naive" not in result  # no DataLoader reference for segmentation
    pal_r = result["pal"]
    labeled, unlabeled = pal_r["n_labeled"], pal_r["n_unlabeled"]
    assert labeled == 200 and unlabeled > 0
    _check_phases(
        pal_r,
        {"task_training": labeled, "scoring_training": labeled, "scoring": unlabeled,
         "bare_forward": unlabeled},
    )  # fmt: skip
    for phase in ("task_training", "scoring_training"):
        assert "flops_per_image" in pal_r[phase], phase
    assert pal_r["subquery_finetune"]["steps"] == 0  # lambda2 = 0: no sub-queries
    rows = _table_rows(table)
    assert rows["phase"] == ["s", "images/s", "model TFLOP/s", "MFU"]
    assert set(rows) == {"phase", "task training", "scoring training", "scoring", "bare forward"}
    assert rows["scoring"][0] == f"{pal_r['scoring']['seconds']:.2f}"
    assert "(segmentation)" in table


WHOLE_ROUND_PHASES = ("task_training", "scoring_training", "scoring", "finetunes", "rescoring")


def _whole_round_checks(result: dict, table: str, steps: int) -> None:
    """What a whole-round result must hold: every phase on both sides, the sub-query steps, the
    whole round as the sum of its phases, its speed-up and the re-scoring ratio."""
    pal_r, naive_r, whole = result["pal"], result["naive"], result["whole_round"]
    for phase in WHOLE_ROUND_PHASES:  # both loops timed the same images in every phase
        assert math.isfinite(pal_r[phase]["seconds"]), phase
        assert _naive_images(naive_r, phase) == pytest.approx(pal_r[phase]["images"]), phase
    assert pal_r["finetunes"]["steps"] == naive_r["finetunes"]["steps"] == steps
    assert pal_r["rescoring"]["steps"] == naive_r["rescoring"]["steps"] == steps
    assert whole["pal_seconds"] == pytest.approx(
        sum(pal_r[p]["seconds"] for p in WHOLE_ROUND_PHASES)
    )
    assert whole["naive_seconds"] == pytest.approx(
        sum(naive_r[p]["seconds"] for p in WHOLE_ROUND_PHASES)
    )
    assert whole["speedup"] == pytest.approx(whole["naive_seconds"] / whole["pal_seconds"])
    assert whole["target"] == {"fp32": 2.5, "bf16": 4.0}[result["precision"]]
    assert pal_r["rescoring_vs_bare_forward"] == pytest.approx(
        pal_r["rescoring_bare_forward"]["seconds"] / pal_r["rescoring"]["seconds"]
    )
    assert pal_r["rescoring_bare_forward"]["images"] == pal_r["rescoring"]["images"]
    assert f"| sub-query fine-tunes ({steps}) |" in table
    assert f"| re-scorings of the remaining pool ({steps}) |" in table
    assert "| **whole round** |" in table and "(target: >= 85%" in table
    assert f"**{whole['speedup']:.2f}x** |" in table


def _whole_round(tmp_path, capsys, config: str, settings: tuple[str, ...], *flags: str):
    """``python -m benchmarks --config CONFIG`` on CPU with ``--set`` ``settings``, in-process:
    its JSON result and its Markdown table (printed too)."""
    args = ["--threads", "2", *flags]
    for setting in settings:
        args += ["--set", setting]
    return _benchmark(tmp_path, capsys, config, *args)


def test_whole_round_benchmark_times_the_subqueries_on_both_sides(tmp_path, capsys):
    """``--whole-round`` on the digits: the sub-query fine-tunes and re-scores of both loops."""
    settings = ("pool_size=400", "initial_size=100", "epochs_task=1", "epochs_scoring=1")
    settings += ("finetune_scope=all", "finetune_start=restart", "finetune_epochs=1")
    result, table = _whole_round(tmp_path, capsys, "digits", settings, "--whole-round")
    _whole_round_checks(result, table, steps=2)  # K = 3
    assert result["pal"]["subquery_finetune"]["start"] == "restart"
    # the whole network fine-tuned: its floor trains the network, the re-score's is bare forward
    _check_floors(result["pal"], table, ("task_training", "scoring_training", "finetunes",
                                         "rescoring"))  # fmt: skip


@pytest.mark.slow
def test_cifar10_tv_whole_round_at_a_tiny_size(tmp_path, capsys):
    """The ``cifar10_tv`` config (torchvision's VGG-16 / ResNet-18, the whole scoring network
    fine-tuned before every sub-query) at a tiny size: every phase of the whole round."""
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (only developer machines have ../shared/data)")
    settings = ("pool_size=100", "val_size=16", "initial_size=16", "query_size=10")
    settings += ("epochs_task=1", "epochs_scoring=1", "finetune_epochs=1")
    result, table = _whole_round(tmp_path, capsys, "cifar10_tv", settings)
    _whole_round_checks(result, table, steps=4)  # K = 5
    settings = result["settings"]
    assert (settings["task_backbone"], settings["scoring_backbone"]) == ("vgg16_tv", "resnet18_tv")
    assert result["pal"]["subquery_finetune"]["scope"] == "all"
    # D_L: the first 16 of the experiment's unlabeled pool (100 less 16 validation images and
    # its own initial 16), D_U: the rest
    assert result["pal"]["n_labeled"] == 16 and result["pal"]["n_unlabeled"] == 100 - 16 - 2 * 16


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
    from benchmarks.prefilter import main as prefilter

    out = tmp_path / "prefilter"
    argv = ["--config", str(REPO / "configs" / "digits.yaml"),
            "--strategy", "entropy", "--seeds", "0", "--sizes", "200", "40", "--out", str(out),
            "--set", "dataset=digits", "--set", "epochs_task=2", "--set", "pool_size=600",
            "--set", "initial_size=40", "--set", "query_size=20"]  # fmt: skip
    assert prefilter(argv) == 0
    result = json.loads((out / "prefilter-entropy.json").read_text())
    rows = {r["candidate_pool"]: r for r in result["rows"]}
    assert set(rows) == {200, 40}
    for r in rows.values():
        assert 0 <= r["kept"] <= r["reachable"] <= 1  # it keeps only what it could see
        assert r["full_round1_test_accuracy"] == rows[200]["full_round1_test_accuracy"]
    assert rows[40]["reachable"] < 1  # 40 of 520 candidates cannot hold the whole query
    assert "| 40 |" in (out / "prefilter-entropy.md").read_text()
