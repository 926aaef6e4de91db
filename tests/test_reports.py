"""Study reports: aggregation on hand-made runs, and figures/tables from a real MLflow store."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

import pal
from pal.cli import main
from pal.config import ConfigError
from pal.reports import (
    correlations,
    curves,
    first_crossing,
    labels_saved,
    reference_variant,
    with_missing_share,
    write_report,
)
from tests.conftest import FAST


def run(variant, seed, acc, labeled=(100, 150, 200), strategy=None, **history):
    """A run as pal.tracking.load_study returns it, with test accuracy ``acc`` per round."""
    rounds = range(len(acc))
    return {
        "run_id": f"{variant}-{seed}",
        "run_name": f"{variant}-{seed}",
        "status": "FINISHED",
        "variant": variant,
        "params": {
            "strategy": strategy or variant,
            "seed": str(seed),
            "dataset": "digits",
            "pool_size": "1100",
            "val_size": "100",
        },
        "history": {
            "test_accuracy": dict(zip(rounds, acc, strict=True)),
            "n_labeled": dict(zip(rounds, labeled, strict=True)),
            **history,
        },
    }


def pixels_of(png, color: str, tol: float = 0.03) -> int:
    """How many pixels of the image at ``png`` have ``color`` (the unblended line colour)."""
    image = imread(png)[..., :3]
    return int((np.abs(image - np.array(to_rgb(color))).max(axis=-1) < tol).sum())


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
    np.testing.assert_allclose(out["pal"].std, [0.1, 0.1, 0.0], atol=1e-12)
    np.testing.assert_array_equal(out["pal"].runs, [2, 2, 2])
    # percent labeled from pool_size - val_size = 1000 when the run did not log it
    np.testing.assert_allclose(out["random"].percent, [10.0, 15.0, 20.0])


def test_a_run_missing_a_round_counts_only_where_it_has_it():
    runs = [run("pal", 0, [0.5, 0.7, 0.9]), run("pal", 1, [0.7, 0.9], labeled=(100, 150))]
    c = curves(runs, "test_accuracy")["pal"]
    np.testing.assert_array_equal(c.runs, [2, 2, 1])
    np.testing.assert_allclose(c.mean, [0.6, 0.8, 0.9])


def test_first_crossing_interpolates_linearly():
    x = np.array([100.0, 200.0, 300.0])
    assert first_crossing(x, np.array([0.5, 0.7, 0.9]), 0.8) == pytest.approx(250.0)
    assert first_crossing(x, np.array([0.85, 0.7, 0.9]), 0.8) == 100.0
    assert first_crossing(x, np.array([0.5, 0.6, 0.7]), 0.8) is None


def test_labels_saved_against_randoms_final_accuracy():
    runs = [
        run("random", 0, [0.5, 0.6, 0.8]),
        run("pal", 0, [0.5, 0.9, 0.95]),
        run("slow", 0, [0.5, 0.6, 0.7], strategy="entropy"),
    ]
    saved = labels_saved(curves(runs, "test_accuracy"), reference_variant(runs))
    # pal: 0.6 at 100 labels... 0.5 -> 0.9 between 100 and 150, reaches 0.8 at 137.5
    assert saved["pal"]["needed"] == pytest.approx(137.5)
    assert saved["pal"]["saved"] == pytest.approx(62.5)
    assert saved["pal"]["saved_percent"] == pytest.approx(31.25)
    assert saved["slow"]["needed"] is None and saved["random"]["reference"]


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
    assert row["ss_sc_pearson_std"] == pytest.approx(math.sqrt(0.02))
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

    assert set(rep.files) >= {"accuracy.png", "accuracy.csv", "missing_classes.png", "report.md"}
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
    assert float(rows[1]["test_accuracy_std"]) == pytest.approx(0.01)
    assert float(rows[1]["percent_labeled"]) == pytest.approx(15.0)
    assert "| pal | 2 | 0.5000 ± 0.0000 | 0.9000 ± 0.0000 | 0.9500 ± 0.0000 |" in rep.markdown
    assert "| 10.0% | 15.0% | 20.0% |" in rep.markdown
    missing = list(csv.DictReader(rep.files["missing_classes.csv"].open()))
    assert [float(r["missing_class_share_mean"]) for r in missing if r["variant"] == "pal"] == [
        0.6,
        0.3,
    ]


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
        "report/report.md",
    } <= logged
    png = client.download_artifacts(parent, "report/accuracy.png", str(tmp_path))
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
    share = json.loads((out / "report.json").read_text())["missing_class_share"]["random"]
    assert share["rounds"] == [1, 2] and all(0 <= v <= 1 for v in share["mean"])


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
