"""Ablation studies: every file is valid and runs at smoke size against a real MLflow store."""

from __future__ import annotations

import json

import pytest

import pal
from pal.cli import main
from pal.jobs import load_job
from pal.reports import COLORS
from tests.conftest import REPO
from tests.helpers import pixels_of

STUDIES = sorted(p for p in (REPO / "ablations").glob("*.py") if not p.name.startswith("_"))


def test_the_twelve_studies_exist():
    assert {p.stem for p in STUDIES} == {
        "stopping",
        "mnist_strategies",
        "mnist_precision",
        "mnist_precision_one_query",
        "mnist_components",
        "components",
        "backbones",
        "strategies",
        "label_noise",
        "biased_pool",
        "finetune_scope",
        "segmentation_biased_pool",
    }


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_files_are_grids_of_variants_over_five_seeds(path):
    job = load_job(path)
    if path.stem.startswith("mnist_"):  # sized for CPUs: 3 seeds, one core per trial
        assert job.seeds == [0, 1, 2] and job.gpus_per_trial == 0 and job.cpus_per_trial == 1
        assert job.base["dataset"].endswith("mnist.npz")
    elif path.stem == "stopping":  # the embedded digits on CPUs: 3 seeds, twelve queries
        assert job.seeds == [0, 1, 2] and job.gpus_per_trial == 0 and job.cpus_per_trial == 1
        assert job.base["dataset"] == "digits" and job.base["rounds"] == 12
    else:
        assert job.seeds == [0, 1, 2, 3, 4]
    assert job.num_samples == 1 and not job.search_space
    assert len(job.variants) >= 2
    smoke = job.smoke_sized()
    assert smoke.seeds == [0] and smoke.base["dataset"] in ("digits", "digit_scenes")
    text = path.read_text()
    assert f"pal ablate ablations/{path.name}" in text and "--smoke" in text


def test_components_are_the_papers_three():
    variants = load_job(REPO / "ablations" / "components.py").variants
    assert variants == {
        "S_S": {"lambda1": 0.0, "lambda2": 0.0},
        "S_S+S_C": {"lambda1": 1.0, "lambda2": 0.0},
        "S_S+S_C+S_D": {"lambda1": 1.0, "lambda2": 1.0},
    }


def test_the_precision_study_pairs_each_strategy_in_bf16_with_itself_in_fp32():
    job = load_job(REPO / "ablations" / "mnist_precision.py")
    strategies = {name.rsplit("-", 1)[0] for name in job.variants}
    assert strategies == {"random", "entropy", "coreset", "dbal", "pal", "vaal", "typiclust"}
    assert job.pairs == {f"{s}-bf16": f"{s}-fp32" for s in strategies}
    for strategy in strategies:
        bf16, fp32 = job.variants[f"{strategy}-bf16"], job.variants[f"{strategy}-fp32"]
        assert bf16.pop("precision") == "bf16" and fp32.pop("precision") == "fp32"
        assert bf16.pop("memory_format") == "channels_last"
        assert fp32.pop("memory_format") == "contiguous"
        assert bf16 == fp32  # nothing else differs


def test_the_one_query_precision_study_is_the_long_strategies_and_a_layout_control():
    full = load_job(REPO / "ablations" / "mnist_precision.py")
    job = load_job(REPO / "ablations" / "mnist_precision_one_query.py")
    assert job.base == {**full.base, "rounds": 1}
    control = "pal-fp32-channels_last"
    strategies = ("pal", "vaal", "typiclust")
    assert set(job.variants) == {f"{s}-{p}" for s in strategies for p in ("fp32", "bf16")} | {
        control
    }
    for name in set(job.variants) - {control}:
        assert job.variants[name] == full.variants[name]
    assert job.variants[control] == {**job.variants["pal-fp32"], "memory_format": "channels_last"}
    assert job.pairs == {**{f"{s}-bf16": f"{s}-fp32" for s in strategies}, control: "pal-fp32"}


def test_only_dbal_carries_dropout_in_the_strategy_studies():
    for name in ("strategies", "label_noise", "mnist_strategies"):
        job = load_job(REPO / "ablations" / f"{name}.py")
        assert job.base.get("dropout", 0.0) == 0.0, name
        for variant, overrides in job.variants.items():
            dbal = overrides["strategy"] == "dbal"
            assert overrides.get("dropout", 0.0) == (0.5 if dbal else 0.0), (name, variant)


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_runs_at_smoke_size(ray_local, path, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = pal.sweep(
        path, smoke=True, tracking_uri=uri, storage_path=str(tmp_path / "runs"), verbose=0
    )
    job = result.job
    assert result.n_errored == 0
    assert set(result.variants) == set(job.variants)
    assert all(v["trials"] == 1 for v in result.variants.values())
    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert sorted(r.data.tags["pal.variant"] for r in runs) == sorted(job.variants)
    for run in runs:
        overrides = job.variants[run.data.tags["pal.variant"]]
        for key, value in overrides.items():  # the variant's values reached the trial
            assert run.data.params[key] == str(value)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")]
        assert sorted(steps) == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert "variants.json" in artifacts
    assert parent.data.tags["pal.sweep"] == job.name

    # pal report on the study's job file: figures read back, artifacts on the study's run
    out = tmp_path / "report"
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(out)]) == 0
    for variant, color in zip(job.variants, COLORS, strict=False):
        assert pixels_of(out / "accuracy.png", color) > 50, variant
    summary = json.loads((out / "report.json").read_text())
    segmentation = job.smoke_sized().base["dataset"] == "digit_scenes"
    assert summary["metric"] == ("mIoU" if segmentation else "accuracy")
    assert f"## Test {summary['metric']} (mean" in (out / "report.md").read_text()
    shares = summary["missing_class_share"]
    if job.base.get("missing_classes"):
        assert set(shares) == set(job.variants)
        assert all(len(c["mean"]) == 2 for c in shares.values())  # the two smoke queries
        for variant, color in zip(job.variants, COLORS, strict=False):
            assert pixels_of(out / "missing_classes.png", color) > 50, variant
    else:
        assert shares == {} and not (out / "missing_classes.png").exists()
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/accuracy.png", "report/accuracy.csv", "report/report.md"} <= logged
