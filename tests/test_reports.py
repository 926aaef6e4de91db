"""Study reports: aggregation on hand-made runs, and figures/tables from a real MLflow store."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from matplotlib.image import imread

import pal
from pal.cli import main
from pal.config import ConfigError
from pal.reports import (
    correlations,
    curves,
    reference_variant,
    with_missing_share,
    write_report,
)
from pal.stats import paired_t_interval
from pal.verdicts import NO_VERDICT, pair_by_seed, paired_verdicts
from tests.conftest import FAST
from tests.helpers import BASE, LABELED, paired_study, pixels_of, run


# ---------------------------------------------------------------------- aggregation
def test_curves_are_mean_and_std_over_seeds_per_round():
    runs = [
        run("pal", 0, [0.5, 0.7, 0.9]),
        run("pal", 1, [0.7, 0.9, 0.9]),
        run("random", 0, [0.6, 0.6, 0.8]),
    ]
    out = curves(runs, "test_accuracy")
    assert list(out) == ["pal", "random"]
    np.testing.assert_allclose(out["pal"].mean, [0.6, 0.8, 0.9])
    # the sample std (n - 1): 0.2 apart over two runs is sqrt(0.02)
    np.testing.assert_allclose(out["pal"].std, [0.02**0.5, 0.02**0.5, 0.0], atol=1e-12)
    np.testing.assert_array_equal(out["pal"].runs, [2, 2, 2])
    assert np.isnan(out["random"].std).all()  # one run: no spread, not a zero one
    # percent labeled from pool_size - val_size = 1000 when the run did not log it
    np.testing.assert_allclose(out["random"].percent, [10.0, 15.0, 20.0])


def test_a_run_missing_a_round_counts_only_where_it_has_it():
    runs = [run("pal", 0, [0.5, 0.7, 0.9]), run("pal", 1, [0.7, 0.9], labeled=(100, 150))]
    c = curves(runs, "test_accuracy")["pal"]
    np.testing.assert_array_equal(c.runs, [2, 2, 1])
    np.testing.assert_allclose(c.mean, [0.6, 0.8, 0.9])


# ---------------------------------------------------------------------- paired verdicts
def test_paired_t_interval_is_mean_plus_minus_t_sd_over_root_n():
    mean, low, high = paired_t_interval(np.array([0.01, 0.02, 0.03]))
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t_{0.975, 2}; sd with n - 1 is 0.01
    assert (float(mean), float(low), float(high)) == pytest.approx((0.02, 0.02 - half, 0.02 + half))
    # over axis 0: one interval per round
    mean, low, high = paired_t_interval(np.array([[0.0, 0.01], [0.0, 0.02], [0.0, 0.03]]))
    np.testing.assert_allclose(np.c_[low, high][1], [0.02 - half, 0.02 + half])
    np.testing.assert_allclose(np.c_[low, high][0], [0.0, 0.0])


def test_pairing_keeps_the_seeds_and_rounds_both_variants_finished():
    runs = paired_study(0.02, seeds=range(4))
    runs.append(run("pal", 9, list(BASE), labeled=LABELED))  # no random run with seed 9
    runs.append(run("random", 7, list(BASE), labeled=LABELED))  # no pal run with seed 7
    runs.append({**run("random", 3, list(BASE), labeled=LABELED), "status": "FAILED"})
    p = pair_by_seed(runs, "pal", "random", "test_accuracy")
    assert p.seeds == ["0", "1", "2", "3"] and p.problems == []
    np.testing.assert_array_equal(p.rounds, [0, 1, 2, 3, 4])
    by_seed = {(r["variant"], r["params"]["seed"]): r for r in runs if r["status"] == "FINISHED"}
    for i, seed in enumerate(p.seeds):  # row i of both matrices is the same seed's run
        ref = by_seed[("random", seed)]["history"]["test_accuracy"]
        np.testing.assert_allclose(p.reference[i], [ref[r] for r in range(5)])
    np.testing.assert_allclose(p.variant - p.reference, np.c_[[0.0] * 4, [[0.02] * 4] * 4])


def test_a_variant_two_points_ahead_in_every_seed_is_better():
    (v,) = paired_verdicts(paired_study(0.02, noise=0.003), "test_accuracy", "random")
    assert (v.variant, v.reference, v.n_seeds, v.verdict) == ("pal", "random", 5, "better")
    assert v.auc_diff == pytest.approx(0.02, abs=0.002)
    assert 0 < v.auc_ci[0] < v.auc_diff < v.auc_ci[1]
    assert [d.round for d in v.rounds] == [0, 1, 2, 3, 4]
    assert [d.percent_labeled for d in v.rounds] == pytest.approx([10, 15, 20, 25, 30])
    assert v.rounds[0].diff == 0.0  # the shared initial pool
    assert all(d.ci[0] > 0 for d in v.rounds[1:])
    # the seed offsets (3 points) dwarf the gap: unpaired, the runs would not tell it apart
    unpaired = [
        np.mean(list(r["history"]["test_accuracy"].values())[1:])
        for r in paired_study(0.02, noise=0.003)
    ]
    assert np.std(unpaired) > 0.01


def test_the_reference_plus_zero_mean_noise_shows_no_difference():
    runs = paired_study(0.0, noise=0.01, rng_seed=1)
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    assert v.verdict == "no difference detected"
    assert v.auc_ci[0] < 0 < v.auc_ci[1] and v.n_seeds == 5


def test_a_variant_behind_is_worse_and_saves_no_labels():
    (v,) = paired_verdicts(paired_study(-0.03, noise=0.005), "test_accuracy", "random")
    assert v.verdict == "worse"
    assert v.auc_ci[1] < 0 and v.auc_diff == pytest.approx(-0.03, abs=0.003)
    assert v.labels_saved["saved"] == "not reached"
    assert v.labels_saved["ci"] == ["not reached", "not reached"]


def test_two_shared_seeds_give_no_verdict_and_no_intervals():
    runs = paired_study(0.02, seeds=range(5), noise=0.003)
    runs = [r for r in runs if r["variant"] == "pal" or r["params"]["seed"] in ("0", "1")]
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    assert v.n_seeds == 2 and v.seeds == ["0", "1"]
    assert v.verdict == NO_VERDICT == "no verdict (fewer than 3 shared seeds)"
    assert v.auc_ci is None and all(d.ci is None for d in v.rounds)
    assert v.auc_diff == pytest.approx(0.02, abs=0.005)  # the mean is still there
    assert v.p_value is None and v.p_adjusted is None and v.family_size == 0
    assert v.labels_saved["ci"] is None and v.labels_saved["no_interval"] == "n < 3"
    assert v.labels_saved["saved"] > 0  # the point estimate is still there


def test_no_reference_means_no_verdicts():
    runs = paired_study(0.02, noise=0.003)
    assert paired_verdicts(runs, "test_accuracy", None) == []
    (v,) = paired_verdicts(runs, "test_accuracy", "pal")
    assert v.variant == "random" and v.verdict == "worse"


def test_the_verdicts_labels_saved_is_the_one_figure_of_its_paired_arrays():
    from pal.labels_saved import paired_labels_saved

    runs = paired_study(0.02, noise=0.01, rng_seed=2)
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    p = pair_by_seed(runs, "pal", "random", "test_accuracy")
    want = paired_labels_saved(p.variant, p.variant_labeled, p.reference, p.reference_labeled)
    assert v.labels_saved == want and want["n_seeds"] == 5
    assert want["ci"][0] < want["saved"] < want["ci"][1]
    (again,) = paired_verdicts(runs, "test_accuracy", "random")
    assert again.labels_saved == v.labels_saved


def test_labels_saved_whose_data_cannot_rule_out_never_reaching_prints_not_reached():
    # final accuracies 0.9, 0.9, 0.75, 0.75, 0.75 against 0.8: the mean (0.81) reaches it, but
    # three of five seeds do not, so the lower bound is "not reached", never a number
    runs = [run("random", s, [0.5, 0.6, 0.8], labeled=(100, 150, 200)) for s in range(5)]
    runs += [
        run("pal", s, [0.5, 0.6, final], labeled=(100, 150, 200))
        for s, final in enumerate((0.9, 0.9, 0.75, 0.75, 0.75))
    ]
    (v,) = paired_verdicts(runs, "test_accuracy", "random")
    saved = v.labels_saved
    assert saved["saved"] == pytest.approx(200 - (150 + 50 * 0.2 / 0.21))
    assert saved["ci"][0] == "not reached" and saved["ci"][1] >= saved["saved"]


def test_reference_is_the_variant_running_the_random_strategy():
    runs = [
        run("baseline", 0, [0.5], labeled=(100,), strategy="random"),
        run("S_S", 0, [0.6], labeled=(100,), strategy="pal"),
    ]
    assert reference_variant(runs) == "baseline"
    assert reference_variant([runs[1]]) is None


def test_missing_share_from_per_class_rates_when_not_logged():
    r = run(
        "pal",
        0,
        [0.5, 0.6, 0.7],
        **{
            "query_class_rate/8": {1: 0.5, 2: 0.25},
            "query_class_rate/9": {1: 0.25, 2: 0.0},
        },
    )
    r["params"]["missing_classes"] = json.dumps(["8", "9"])
    assert with_missing_share(r)["history"]["missing_class_share"] == {1: 0.75, 2: 0.25}
    r["params"]["missing_classes"] = "[]"
    assert "missing_class_share" not in with_missing_share(r)["history"]


def test_correlations_pool_seeds_and_rounds():
    runs = [
        run(
            "pal",
            s,
            [0.5, 0.6, 0.7],
            ss_sc_pearson={1: p, 2: p + 0.2},
            ss_sc_spearman={1: 0.5, 2: 0.5},
        )
        for s, p in ((0, 0.2), (1, 0.4))
    ]
    runs.append(run("random", 0, [0.5, 0.6, 0.7]))
    (row,) = correlations(runs)
    assert (row["dataset"], row["variant"], row["runs"], row["queries"]) == ("digits", "pal", 2, 4)
    assert row["ss_sc_pearson_mean"] == pytest.approx(0.4)
    assert row["ss_sc_pearson_std"] == pytest.approx(math.sqrt(0.08 / 3))  # sample std
    assert row["ss_sc_spearman_std"] == pytest.approx(0.0)


def test_write_report_draws_every_variant_and_writes_the_tables(tmp_path):
    share = {1: 0.6, 2: 0.3}
    runs = [
        run("random", s, [0.5, 0.6 + 0.02 * s, 0.8], missing_class_share={1: 0.2, 2: 0.2})
        for s in (0, 1)
    ]
    runs += [run("pal", s, [0.5, 0.9, 0.95], missing_class_share=share) for s in (0, 1)]
    runs.append({**run("vaal", 0, [0.5, 0.5, 0.5]), "status": "FAILED"})
    rep = write_report({"name": "toy", "parent_run_id": None, "runs": runs}, tmp_path)

    assert set(rep.files) >= {
        "accuracy.png",
        "accuracy.csv",
        "missing_classes.png",
        "paired_difference.png",
        "report.md",
    }
    for name in ("accuracy.png", "missing_classes.png"):
        assert imread(rep.files[name]).shape[:2] == (450, 700)
        for variant in ("random", "pal"):
            assert pixels_of(rep.files[name], rep.colors[variant]) > 100, (name, variant)
    assert "vaal" not in rep.colors  # the failed run is left out, and said so
    assert "Left out: 1 unfinished runs `vaal-0` (FAILED)" in rep.markdown

    rows = list(csv.DictReader(rep.files["accuracy.csv"].open()))
    assert [(r["variant"], r["round"]) for r in rows][:3] == [
        ("random", "0"),
        ("random", "1"),
        ("random", "2"),
    ]
    assert float(rows[1]["test_accuracy_mean"]) == pytest.approx(0.61)
    assert float(rows[1]["test_accuracy_std"]) == pytest.approx(0.02 / 2**0.5, abs=1e-6)  # sample
    assert float(rows[1]["percent_labeled"]) == pytest.approx(15.0)
    assert "| pal | 2 | 0.5000 ± 0.0000 | 0.9000 ± 0.0000 | 0.9500 ± 0.0000 |" in rep.markdown
    assert "| 10.0% | 15.0% | 20.0% |" in rep.markdown
    missing = list(csv.DictReader(rep.files["missing_classes.csv"].open()))
    assert [float(r["missing_class_share_mean"]) for r in missing if r["variant"] == "pal"] == [
        0.6,
        0.3,
    ]
    # two seeds: the verdict says why there is none
    assert f"| pal | random | 2 | +22.00 | - | - | {NO_VERDICT} | - | - |" in rep.markdown
    assert "| pal | random | 2 | 0.8000 | 62 (no interval: n < 3) |" in rep.markdown
    (verdict,) = json.loads(rep.files["report.json"].read_text())["verdicts"]
    assert verdict["verdict"] == NO_VERDICT and verdict["auc_ci"] is None


def test_write_report_writes_the_verdicts(tmp_path):
    runs = paired_study(0.02, noise=0.003)
    runs += [  # vaal: each seed's random curve 3 points (+-0.4) lower after round 0
        run(
            "vaal",
            seed,
            [a - (0.03 + 0.002 * (seed - 2)) * (i > 0) for i, a in acc],
            labeled=LABELED,
        )
        for r in runs
        if r["variant"] == "random"
        for seed, acc in [(int(r["params"]["seed"]), r["history"]["test_accuracy"].items())]
    ]
    rep = write_report({"name": "toy", "parent_run_id": None, "runs": runs}, tmp_path)

    data = json.loads(rep.files["report.json"].read_text())
    by_variant = {v["variant"]: v for v in data["verdicts"]}
    assert set(by_variant) == {"pal", "vaal"}
    pal_, vaal = by_variant["pal"], by_variant["vaal"]
    assert (pal_["verdict"], vaal["verdict"]) == ("better", "worse")
    assert pal_["reference"] == "random" and pal_["n_seeds"] == 5
    assert pal_["auc_diff"] == pytest.approx(0.02, abs=0.002) and len(pal_["auc_ci"]) == 2
    assert pal_["rounds"][1].keys() >= {"round", "percent_labeled", "diff", "ci"}
    assert pal_["rounds"][1]["percent_labeled"] == pytest.approx(15.0)
    assert (
        pal_["labels_saved"]["ci"][0]
        <= pal_["labels_saved"]["saved"]
        <= (pal_["labels_saved"]["ci"][1])
    )
    assert vaal["labels_saved"]["saved"] == "not reached"

    assert "## Verdicts (against `random`, paired by seed)" in rep.markdown
    assert "95% paired t interval" in rep.markdown and "paired t test over seeds" in rep.markdown
    assert "The family is 2 comparisons" in rep.markdown and "Holm's step-down" in rep.markdown
    auc, ci = 100 * pal_["auc_diff"], [100 * v for v in pal_["auc_ci"]]
    row = f"| pal | random | 5 | {auc:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] |"
    assert row in rep.markdown and rep.markdown.count("| better |") == 1
    assert "| vaal | random | 5 |" in rep.markdown and "| not reached" in rep.markdown
    assert rep.markdown == (tmp_path / "report.md").read_text()

    png = rep.files["paired_difference.png"]
    assert imread(png).shape[:2] == (450, 700)
    for variant in ("pal", "vaal"):
        assert pixels_of(png, rep.colors[variant]) > 100, variant
    assert pixels_of(png, "black") > 300  # the zero line


def test_a_study_without_finished_runs_is_a_config_error(tmp_path):
    runs = [{**run("pal", 0, [0.5], labeled=(100,)), "status": "RUNNING"}]
    with pytest.raises(ConfigError, match="^study: 'toy' has no finished run"):
        write_report({"name": "toy", "runs": runs}, tmp_path)


# ---------------------------------------------------------------------- with a real store
@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    """Two variants x two seeds of tiny real experiments nested under a study run (SQLite)."""
    from pal.loop import Experiment
    from pal.tracking import MLflowTracker, start_sweep_run

    uri = f"sqlite:///{tmp_path_factory.mktemp('report') / 'mlflow.db'}"
    parent = start_sweep_run(uri, "pal-ablations", "toy", {"base": FAST})
    for variant in ("random", "pal"):
        for seed in (0, 1):
            config = pal.make_config(FAST, strategy=variant, seed=seed, missing_classes=["8", "9"])
            tracker = MLflowTracker(
                config,
                uri,
                "pal-ablations",
                parent_run_id=parent,
                tags={"pal.variant": variant, "pal.sweep": "toy"},
            )
            with tracker:
                Experiment(config).run((tracker,))
    return uri, parent


def test_pal_report_reads_the_study_from_mlflow_and_logs_onto_its_run(toy_study, tmp_path, capsys):
    from mlflow import MlflowClient

    uri, parent = toy_study
    out = tmp_path / "report"
    assert main(["report", "toy", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert "# Study `toy`" in capsys.readouterr().out

    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {
        "report/accuracy.png",
        "report/accuracy.csv",
        "report/missing_classes.png",
        "report/correlations.csv",
        "report/paired_difference.png",
        "report/report.md",
        "report/report.json",
    } <= logged
    for name in ("accuracy.png", "paired_difference.png"):
        png = client.download_artifacts(parent, f"report/{name}", str(tmp_path))
        assert imread(png).shape[:2] == (450, 700)

    # the table's means are the means of what the runs logged
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    final = {}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "test_accuracy")
        final.setdefault(child.data.tags["pal.variant"], []).append(
            max(history, key=lambda m: m.step).value
        )
    rows = [r for r in csv.DictReader((out / "accuracy.csv").open()) if r["round"] == "2"]
    for row in rows:
        assert float(row["test_accuracy_mean"]) == pytest.approx(
            np.mean(final[row["variant"]]), abs=1e-6
        )
        assert row["runs"] == "2"
    corr = list(csv.DictReader((out / "correlations.csv").open()))
    assert [r["variant"] for r in corr] == ["pal"] and -1 <= float(
        corr[0]["ss_sc_pearson_mean"]
    ) <= 1
    # missing-class shares come from the logged per-round metric
    data = json.loads((out / "report.json").read_text())
    share = data["missing_class_share"]["random"]
    assert share["rounds"] == [1, 2] and all(0 <= v <= 1 for v in share["mean"])
    # pal against random, paired on seeds 0 and 1: too few for a verdict
    (verdict,) = data["verdicts"]
    assert (verdict["variant"], verdict["reference"], verdict["n_seeds"]) == ("pal", "random", 2)
    assert verdict["verdict"] == NO_VERDICT and [r["round"] for r in verdict["rounds"]] == [0, 1, 2]
    assert verdict["rounds"][0]["diff"] == 0.0  # the same seed starts from the same model


def test_report_by_parent_run_id_equals_report_by_name(toy_study, tmp_path):
    uri, parent = toy_study
    by_name = pal.report("toy", tracking_uri=uri, out_dir=tmp_path / "a", log=False)
    by_id = pal.report(parent, tracking_uri=uri, out_dir=tmp_path / "b", log=False)
    assert by_id.parent_run_id == by_name.parent_run_id == parent
    assert by_id.markdown == by_name.markdown


def test_unknown_study_names_the_studies_in_the_store(toy_study, capsys):
    uri, _ = toy_study
    with pytest.raises(ConfigError, match=r"^study: no study 'nope' .* \['toy'\]"):
        pal.report("nope", tracking_uri=uri, log=False)
    assert main(["report", "nope", "--tracking-uri", uri]) == 2
    assert "pal: error: study: no study 'nope'" in capsys.readouterr().err


def test_a_study_with_pairs_compares_each_variant_with_its_own_reference(tmp_path):
    """``pairs`` (as ``ablations/mnist_precision.py`` sets them): ``pal-bf16`` against
    ``pal-fp32`` and ``random-bf16`` against ``random-fp32``, never against ``random``."""

    def renamed(runs, names):
        return [{**r, "variant": names[r["variant"]]} for r in runs]

    runs = renamed(paired_study(0.02, noise=0.003), {"pal": "pal-bf16", "random": "pal-fp32"})
    runs += renamed(
        paired_study(-0.03, noise=0.003, rng_seed=5),
        {"pal": "random-bf16", "random": "random-fp32"},
    )
    pairs = {"pal-bf16": "pal-fp32", "random-bf16": "random-fp32", "vaal-bf16": "vaal-fp32"}
    a, b = paired_verdicts(runs, "test_accuracy", None, pairs=pairs)  # no vaal runs: left out
    assert (a.variant, a.reference, a.verdict) == ("pal-bf16", "pal-fp32", "better")
    assert (b.variant, b.reference, b.verdict) == ("random-bf16", "random-fp32", "worse")
    assert a.auc_diff == pytest.approx(0.02, abs=0.002)
    rep = write_report(
        {"name": "toy", "parent_run_id": None, "pairs": pairs, "runs": runs}, tmp_path
    )
    md = rep.markdown
    assert "## Verdicts (against its reference, paired by seed)" in md
    assert "| pal-bf16 | pal-fp32 | 5 |" in md and "| random-bf16 | random-fp32 | 5 |" in md
    per_round = [
        line for line in md.splitlines() if line.startswith("| pal-bf16 | pal-fp32 | +0.00")
    ]
    assert len(per_round) == 1 and per_round[0].count("[") == 5  # rounds 0-4, each an interval
