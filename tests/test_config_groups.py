"""Config keys know their group (data, method, budget, machine) and their allowed values, and a
run's params read back into the same config: what ``pal label init --from-run`` relies on."""

from __future__ import annotations

import dataclasses

import pytest

import pal
import pal.data
import pal.scoring
from pal.config import (
    AUGMENTS,
    GROUPS,
    SCORE_NORMS,
    Config,
    ConfigError,
    choices_of,
    field_names,
    group_of,
    keys_in,
    param_value,
    parse_param,
)
from pal.jobs import SweepJob, validate_job
from pal.labeling.setup import METHOD_KEYS
from tests.conftest import FAST

# a value unlike the default for every key: null where the default is set, set where it is null
OTHER = dict(
    dataset="manifest:/srv/pools/shoes.csv",
    data_dir="/srv/data",
    download=True,
    pool_size=900,
    image_size=64,
    augment="crop_flip",
    strategy="dbal",
    initial_fraction=0.2,
    initial_size=30,
    query_fraction=0.1,
    query_size=15,
    rounds=3,
    val_size=50,
    seed=7,
    label_noise=0.1,
    missing_classes=("3", "8"),
    task_backbone="resnet18",
    scoring_backbone="resnet18",
    epochs_task=12,
    epochs_scoring=9,
    epochs_scoring_warm=3,
    lr_task=1e-05,
    lr_scoring=0.1 + 0.2,  # a float whose shortest repr has 17 digits
    optimizer="adam",
    lr_schedule="constant",
    momentum=0.5,
    weight_decay=0.0,
    batch_size=16,
    eval_batch_size=128,
    dropout=0.25,
    device="cpu",
    device_budget_gb=0.5,
    distributed_min_pool=None,
    distributed_workers=4,
    candidate_pool=2000,
    model_selection="last",
    val_checks=3,
    fit_threshold=0.9,
    epochs_task_max=48,
    randaugment_ops=2,
    randaugment_magnitude=0.5,
    swa=True,
    swa_start=0.5,
    precision="bf16",
    memory_format="channels_last",
    compile=True,
    lambda1=0.37,
    lambda2=0.0,
    subqueries=3,
    finetune_scope="all",
    finetune_start="restart",
    finetune_epochs=4,
    finetune_lr_factor=0.3,
    score_norm="zscore",
    simclr_temperature=0.2,
    mc_samples=8,
    dbal_acquisition="max_entropy",
    vaal_latent_dim=16,
    vaal_epochs=3,
    vaal_lr=0.001,
)

NOT_CARRIED = ("device_budget_gb", "distributed_min_pool", "distributed_workers", "candidate_pool")


# ------------------------------------------------------------------ groups
def test_every_key_has_exactly_one_group():
    for f in dataclasses.fields(Config):
        assert f.metadata["group"] in GROUPS, f.name
        assert group_of(f.name) == f.metadata["group"]
    by_group = [k for g in GROUPS for k in keys_in(g)]
    assert sorted(by_group) == sorted(field_names())
    assert len(by_group) == len(set(by_group))
    for group in GROUPS:
        assert keys_in(group), group


def test_the_method_excludes_the_data_the_budget_and_the_machine():
    method = set(keys_in("method"))
    for group in ("data", "budget", "machine"):
        assert not method & set(keys_in(group)), group
    for key in NOT_CARRIED:
        assert group_of(key) == "machine" and key not in method
    for key in ("dataset", "pool_size", "val_size", "missing_classes", "label_noise", "seed"):
        assert key not in method
    assert set(keys_in("budget")) == {
        "initial_fraction", "initial_size", "query_fraction", "query_size", "rounds", "seed",
    }  # fmt: skip
    carried = {"strategy", "lambda1", "lambda2", "subqueries", "score_norm", "lr_task",
               "optimizer", "finetune_scope", "augment", "fit_threshold", "vaal_lr"}  # fmt: skip
    assert carried <= method
    assert keys_in("method") == METHOD_KEYS


def test_unknown_keys_and_groups_name_what_is_allowed():
    with pytest.raises(ConfigError, match=r"'lamda1' \(did you mean 'lambda1'\?\)"):
        group_of("lamda1")
    with pytest.raises(ConfigError, match=r"^group: must be one of \['data', 'method'"):
        keys_in("hardware")


# ------------------------------------------------------------------ allowed values
def test_allowed_values_live_in_the_field_metadata_and_validation_uses_them():
    assert choices_of("augment") == ("auto", *AUGMENTS)
    assert choices_of("score_norm") == SCORE_NORMS
    assert pal.scoring.SCORE_NORMS is SCORE_NORMS
    assert pal.data.AUGMENTS is AUGMENTS
    assert choices_of("lambda1") is None
    with_choices = [k for k in field_names() if choices_of(k) is not None]
    assert set(with_choices) == {
        "augment", "optimizer", "lr_schedule", "device", "model_selection", "precision",
        "memory_format", "finetune_scope", "finetune_start", "score_norm", "dbal_acquisition",
    }  # fmt: skip
    for key in with_choices:
        assert getattr(Config(), key) in choices_of(key), key
        with pytest.raises(ConfigError) as err:
            Config(**{key: "no_such_value"})
        assert str(err.value) == (
            f"{key}: must be one of {list(choices_of(key))}, got 'no_such_value'"
        )


def test_a_sweep_may_search_any_key_and_names_an_unknown_one():
    validate_job(SweepJob(name="j", base={}, search_space={"rounds": ["choice", [2, 3]]}))
    validate_job(SweepJob(name="j", base={}, search_space={"lambda1": ["uniform", 0.0, 1.0]}))
    job = SweepJob(name="j", base={}, search_space={"lamda1": ["uniform", 0.0, 1.0]})
    with pytest.raises(ConfigError, match="lamda1.*lambda1"):
        validate_job(job)


# ------------------------------------------------------------------ params round trip
def test_other_sets_every_key_to_a_value_unlike_its_default():
    assert list(OTHER) == field_names()
    default = Config()
    for key, value in OTHER.items():
        assert getattr(default, key) != value, key


@pytest.mark.parametrize("values", [{}, OTHER], ids=["defaults", "every_key_changed"])
def test_params_read_back_into_the_same_config(values):
    cfg = Config(**values)
    params = cfg.to_params()
    assert list(params) == field_names()
    assert all(isinstance(v, str) for v in params.values())
    assert params == {k: param_value(v) for k, v in cfg.to_dict().items()}
    back = Config.from_params(params)
    assert back == cfg
    for key in field_names():  # the same type too: 0.0 stays a float, () a tuple
        assert type(getattr(back, key)) is type(getattr(cfg, key)), key


def test_params_as_mlflow_keeps_them():
    params = Config(**OTHER).to_params()
    assert params["distributed_min_pool"] == "None" and params["swa"] == "True"
    assert params["missing_classes"] == '["3", "8"]' and params["lr_task"] == "1e-05"
    assert Config().to_params()["fit_threshold"] == "None"
    assert Config().to_params()["missing_classes"] == "[]"


def test_parse_param_reads_each_kind_of_value():
    assert parse_param("fit_threshold", "None") is None
    assert parse_param("fit_threshold", "0.99") == 0.99
    assert parse_param("swa", "False") is False
    assert parse_param("epochs_task", "30") == 30
    assert parse_param("lr_task", "5e-4") == 0.0005
    assert parse_param("missing_classes", '["cat", "dog"]') == ["cat", "dog"]
    assert parse_param("missing_classes", "('cat',)") == ("cat",)  # a Python tuple, as str()
    assert parse_param("dataset", "None") == "None"  # text stays text
    assert parse_param("strategy", "pal") == "pal"
    with pytest.raises(ConfigError, match=r"^fit_threshold: expected a number, got 'high'$"):
        Config.from_params({"fit_threshold": "high"})
    with pytest.raises(ConfigError, match=r"^seed: must be set \(got null\)$"):
        Config.from_params({"seed": "None"})
    with pytest.raises(ConfigError, match=r"did you mean 'lambda1'"):
        Config.from_params({"lamda1": "0.5"})


# ------------------------------------------------------------------ a real MLflow run
def test_label_init_from_a_tracked_run_takes_its_method_only(tmp_path):
    """``pal label init --from-run`` on a plain tracked run (``fit_threshold`` null, as logged
    by default) takes the run's method keys and none of its data, budget or machine keys."""
    from mlflow import MlflowClient

    from pal.labeling.demo import write_demo
    from pal.labeling.setup import init_project

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    values = {
        **FAST,
        "seed": 3,
        "missing_classes": ("7",),
        "eval_batch_size": 128,
        "device_budget_gb": 8.0,
        "distributed_min_pool": None,
        "distributed_workers": 2,
        "candidate_pool": 300,
        "lambda1": 0.4,
        "lr_scoring": 0.03,
        "score_norm": "rank",
    }
    result = pal.run_experiment(**values, tracking_uri=uri, experiment_name="groups")
    params = MlflowClient(uri).get_run(result.run_id).data.params
    assert params == result.config.to_params()
    assert Config.from_params(params) == result.config

    demo = tmp_path / "demo"
    write_demo(demo)
    project = init_project(
        tmp_path / "proj", demo / "manifest.csv", from_run=result.run_id, tracking_uri=uri
    )
    cfg, run_cfg, default = project.config, result.config, Config()
    assert project.meta["source"]["kind"] == "run"
    for key in keys_in("method"):
        assert getattr(cfg, key) == getattr(run_cfg, key), key
    assert (cfg.lambda1, cfg.lr_scoring, cfg.score_norm, cfg.fit_threshold) == (
        0.4, 0.03, "rank", None,
    )  # fmt: skip
    left = [k for g in ("data", "budget", "machine") for k in keys_in(g) if k != "dataset"]
    for key in left:
        if key != "data_dir":  # the project's own folder: its decode cache
            assert getattr(cfg, key) == getattr(default, key), key
    assert cfg.data_dir == str(project.folder)
    changed = {k for k in left if getattr(run_cfg, k) != getattr(default, k)}
    assert set(NOT_CARRIED) | {"seed", "pool_size", "missing_classes", "device"} <= changed
    assert cfg.dataset == f"manifest:{(demo / 'manifest.csv').resolve()}"
