"""Bad input gets a clear error before any training.

Every case checks the exception type (:class:`pal.ConfigError` or a subclass) and that the message
names the field and what would have been accepted. Errors that need the dataset (sizes, class
names, paths, the device) must come from ``Experiment.__init__``, which trains nothing; a few
cases also go through ``pal.run_experiment`` with every training entry point replaced by a
function that fails the test when called.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import pal
import pal.loop
import pal.pretext.base
import pal.pretext.rotation
import pal.pretext.simclr
import pal.tasks
import pal.training
from pal import Config, ConfigError, DataError, ImageData, make_config
from pal.config import field_names
from pal.loop import Experiment
from pal.registry import UnknownNameError

REPO = Path(__file__).resolve().parents[1]
# digits: 1300 training images; with val_size=100 the pool is 1200, so by default the initial
# pool is 10% = 120 and a query is 5% = 60.
N_TRAIN, POOL = 1300, 1200
DIGITS = dict(dataset="digits", device="cpu")


def esc(text: str) -> str:
    return re.escape(text)


@pytest.fixture
def no_training(monkeypatch):
    """Replace every training entry point by one that fails the test when called."""

    def forbidden(*args, **kwargs):
        pytest.fail("training started although the config is invalid")

    monkeypatch.setattr(pal.tasks, "train_classifier", forbidden)
    monkeypatch.setattr(pal.tasks, "train_segmenter", forbidden)
    monkeypatch.setattr(pal.training.fitting, "train_classifier", forbidden)
    monkeypatch.setattr(pal.training.fitting, "fit", forbidden)
    for pretext in (pal.pretext.base, pal.pretext.rotation, pal.pretext.simclr):
        monkeypatch.setattr(pretext, "fit", forbidden)


def build(**overrides) -> Experiment:
    """A valid config (it must not raise) handed to ``Experiment``."""
    return Experiment(make_config(**{**DIGITS, **overrides}))


def test_no_training_guard_catches_training(no_training):
    """The guard is wired to what the loop really calls, so the checks below are not vacuous."""
    with pytest.raises(pytest.fail.Exception, match="training started"):
        pal.run_experiment(**DIGITS, rounds=0, epochs_task=1)


# ------------------------------------------------------------------ field values, types, ranges
CONFIG_CASES = [
    # choices
    ({"optimizer": "adamw"}, "optimizer: must be one of ['sgd', 'adam'], got 'adamw'"),
    ({"device": "gpu"}, "device: must be one of ['auto', 'cpu', 'cuda'], got 'gpu'"),
    ({"finetune_scope": "body"}, "finetune_scope: must be one of ['head', 'all'], got 'body'"),
    (
        {"finetune_start": "resume"},
        "finetune_start: must be one of ['continue', 'restart'], got 'resume'",
    ),
    (
        {"score_norm": "minmax"},
        "score_norm: must be one of ['none', 'zscore', 'rank'], got 'minmax'",
    ),
    (
        {"augment": "flip"},
        "augment: must be one of ['auto', 'none', 'crop', 'crop_flip'], got 'flip'",
    ),
    ({"lr_schedule": "step"}, "lr_schedule: must be one of ['cosine', 'constant'], got 'step'"),
    # ranges
    ({"lambda1": -0.5}, "lambda1: must be >= 0 (Eq. 3: lambda >= 0), got -0.5"),
    ({"lambda2": -1}, "lambda2: must be >= 0 (Eq. 4), got -1.0"),
    ({"initial_fraction": 0}, "initial_fraction: must be in (0, 1], got 0.0"),
    ({"initial_fraction": 1.5}, "initial_fraction: must be in (0, 1], got 1.5"),
    ({"query_fraction": 0}, "query_fraction: must be in (0, 1], got 0.0"),
    ({"query_fraction": 1.5}, "query_fraction: must be in (0, 1], got 1.5"),
    ({"label_noise": 1.0}, "label_noise: must be in [0, 1), got 1.0"),
    ({"label_noise": -0.1}, "label_noise: must be in [0, 1), got -0.1"),
    ({"subqueries": 0}, "subqueries: must be >= 1, got 0"),
    ({"rounds": -1}, "rounds: must be >= 0, got -1"),
    ({"initial_size": 0}, "initial_size: must be >= 1 or null, got 0"),
    ({"query_size": 0}, "query_size: must be >= 1 or null, got 0"),
    ({"pool_size": 1}, "pool_size: must be >= 2 or null, got 1"),
    ({"missing_classes": ["3", 3]}, "missing_classes: must be unique, got ('3', '3')"),
    ({"epochs_task_max": 10}, "epochs_task_max: must be >= epochs_task (30) or null, got 10"),
    # types
    ({"rounds": "three"}, "rounds: expected an integer, got 'three'"),
    ({"rounds": 2.5}, "rounds: expected an integer, got 2.5"),
    ({"rounds": True}, "rounds: expected an integer, got True"),
    ({"download": "yes"}, "download: expected true or false, got 'yes'"),
    ({"lambda1": "high"}, "lambda1: expected a number, got 'high'"),
    ({"dataset": 7}, "dataset: expected a string, got 7"),
    ({"seed": None}, "seed: must be set (got null)"),
    ({"epochs_task_max": "many"}, "epochs_task_max: expected an integer, got 'many'"),
    ({"missing_classes": {"a": 1}}, "missing_classes: expected a list, got {'a': 1}"),
]


@pytest.mark.parametrize(("values", "message"), CONFIG_CASES, ids=lambda v: str(v)[:40])
def test_bad_value_is_rejected_by_every_constructor(values, message):
    for make in (
        lambda: Config(**{**DIGITS, **values}),
        lambda: Config.from_dict({**DIGITS, **values}),
        lambda: make_config({**DIGITS, **values}),
        lambda: make_config(DIGITS, **values),
        lambda: Config(**DIGITS).replace(**values),
    ):
        with pytest.raises(ConfigError, match=esc(message)):
            make()


RUN_CASES = [
    case
    for case in CONFIG_CASES
    if next(iter(case[0])) in ("optimizer", "lambda2", "subqueries", "download", "label_noise")
]


@pytest.mark.parametrize(("values", "message"), RUN_CASES, ids=lambda v: str(v)[:40])
def test_bad_value_fails_run_experiment_before_training(no_training, values, message):
    with pytest.raises(ConfigError, match=esc(message)):
        pal.run_experiment(**{**DIGITS, **values})


def test_ints_are_accepted_for_floats_and_whole_floats_for_ints():
    c = Config(lambda2=0, rounds=3.0, initial_fraction=1)
    assert c.lambda2 == 0.0 and isinstance(c.lambda2, float)
    assert c.rounds == 3 and isinstance(c.rounds, int)
    assert c.initial_fraction == 1.0  # the closed end of (0, 1]


def test_unknown_key_suggests_the_close_one(no_training):
    message = esc("unknown config key(s) 'lamda1' (did you mean 'lambda1'?); valid keys: [")
    for make in (
        lambda: make_config(lamda1=1),
        lambda: make_config({"lamda1": 1}),
        lambda: Config.from_dict({"lamda1": 1}),
        lambda: Config().replace(lamda1=1),
        lambda: pal.run_experiment(**DIGITS, lamda1=1),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            make()
        assert "'lambda2'" in str(info.value)  # the valid keys are listed
    with pytest.raises(ConfigError, match=r"'zzz_qqq'; valid keys"):  # no suggestion when far off
        make_config(zzz_qqq=1)


# ------------------------------------------------------------------ registry names (need __init__)
@pytest.mark.parametrize(
    ("field", "value", "registry", "kind"),
    [
        ("strategy", "nope", pal.STRATEGIES, "strategy"),
        ("task_backbone", "nope", pal.BACKBONES, "backbone"),
        ("scoring_backbone", "nope", pal.BACKBONES, "backbone"),
        ("dataset", "nope", pal.DATASETS, "dataset"),
    ],
)
def test_unknown_name_lists_the_choices(field, value, registry, kind):
    config = make_config(**{**DIGITS, field: value})  # valid until the registry is asked
    message = f"{field}: unknown {kind} '{value}'; choose one of {registry.names()}"
    with pytest.raises(UnknownNameError, match=esc(message)) as info:
        Experiment(config)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert str(info.value).startswith(f"{field}:")  # not KeyError's quoted repr


def test_registries_hold_the_documented_names():
    assert {"random", "entropy", "pal"} <= set(pal.STRATEGIES.names())
    assert {"cnn", "resnet18", "resnet18_tv", "vgg16", "vgg16_tv"} <= set(pal.BACKBONES.names())
    assert "digits" in pal.DATASETS.names()


def test_unknown_backbone_suggests_the_close_one(no_training):
    with pytest.raises(UnknownNameError, match=esc("(did you mean 'resnet18'?)")):
        pal.run_experiment(**DIGITS, scoring_backbone="resnet")


def test_unknown_dataset_names_the_path_forms(no_training):
    with pytest.raises(DataError, match=esc("dataset: unknown dataset 'mnist'")) as info:
        pal.run_experiment(**DIGITS | {"dataset": "mnist"})
    assert "npz:PATH" in str(info.value) and "folder:PATH" in str(info.value)


def test_unknown_strategy_fails_run_experiment_before_training(no_training):
    with pytest.raises(UnknownNameError, match=esc("strategy: unknown strategy 'pall'")):
        pal.run_experiment(**DIGITS, strategy="pall")


# ------------------------------------------------------------------ sizes (need the dataset)
@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"query_size": 2000, "rounds": 1},
            f"query_size: initial pool 120 + rounds 1 x query 2000 = 2120 is more than the pool "
            f"of {POOL}; lower rounds",
        ),
        (
            {"initial_size": 1300},
            f"initial_size: 1300 is more than the pool of {POOL} (training split less the "
            "validation set)",
        ),
        (
            {"val_size": 1300},
            f"val_size: must be < the pool ({N_TRAIN}), got {N_TRAIN}",
        ),
        (
            {"rounds": 19},
            f"query_size: initial pool 120 + rounds 19 x query 60 = 1260 is more than the pool "
            f"of {POOL}",
        ),
        ({"pool_size": 2000}, f"pool_size: must be <= the training split ({N_TRAIN}), got 2000"),
        ({"pool_size": 200, "val_size": 200}, "val_size: must be < the pool (200), got 200"),
    ],
    ids=["query>pool", "initial>pool", "val>=pool", "rounds*query>pool", "pool>split", "val=pool"],
)
def test_sizes_beyond_the_pool(values, message):
    config = make_config(**DIGITS, **values)
    with pytest.raises(ConfigError, match=esc(message)):
        Experiment(config)


def test_sizes_beyond_the_pool_fail_run_experiment_before_training(no_training):
    with pytest.raises(ConfigError, match=esc("query_size: initial pool 120 + rounds 1 x query")):
        pal.run_experiment(**DIGITS, query_size=2000, rounds=1)
    with pytest.raises(ConfigError, match=esc("pool_size: must be <= the training split")):
        pal.run_experiment(**DIGITS, pool_size=N_TRAIN + 1)


def test_sizes_at_the_limit_are_accepted():
    exp = build(rounds=18)  # 120 + 18 x 60 == 1200: the whole pool, exactly
    assert (exp.initial_size, exp.query_size) == (120, 60)
    assert len(exp.pool.unlabeled) == 18 * exp.query_size
    exp = build(val_size=N_TRAIN - 1, rounds=0)  # a pool of one sample; no query runs
    assert exp.initial_size == 1 and len(exp.pool.val) == N_TRAIN - 1
    assert len(build(pool_size=N_TRAIN).pool.indices) == N_TRAIN


# ------------------------------------------------------------------ strategy-specific checks
def test_subqueries_larger_than_the_query_is_rejected_for_pal(no_training):
    values = dict(strategy="pal", query_size=3, subqueries=5)
    message = "subqueries: must be <= the query size (3), got 5"
    config = make_config(**DIGITS, **values)
    with pytest.raises(ConfigError, match=esc(message)):
        Experiment(config)
    with pytest.raises(ConfigError, match=esc(message)):
        pal.run_experiment(config)


@pytest.mark.parametrize("strategy", ["random", "entropy"])
def test_subqueries_do_not_matter_to_other_strategies(strategy):
    exp = build(strategy=strategy, query_size=3, subqueries=5)
    assert exp.query_size == 3 and exp.strategy.name == strategy
    assert exp.task_model is None  # __init__ trained nothing


def test_subqueries_equal_to_the_query_is_accepted():
    assert build(strategy="pal", query_size=5, subqueries=5).query_size == 5


# ------------------------------------------------------------------ missing_classes
@pytest.mark.parametrize("name", ["11", "cat", "-1", "10"])
def test_missing_class_that_does_not_exist(name):
    config = make_config(**DIGITS, missing_classes=[name])
    message = (
        f"missing_classes: no class '{name}' in digits; classes are "
        f"{[str(i) for i in range(10)]} (or their indices 0..9)"
    )
    with pytest.raises(ConfigError, match=esc(message)):
        Experiment(config)


def test_missing_classes_that_leave_the_initial_pool_empty(no_training):
    everything = [str(i) for i in range(10)]
    message = f"missing_classes: {everything} leave 0 samples for an initial pool of 120"
    with pytest.raises(ConfigError, match=esc(message)):
        Experiment(make_config(**DIGITS, missing_classes=everything))
    with pytest.raises(ConfigError, match=esc(message)):
        pal.run_experiment(**DIGITS, missing_classes=everything)


def test_missing_classes_that_leave_the_initial_pool_too_small():
    nine = [str(i) for i in range(9)]
    config = make_config(**DIGITS, missing_classes=nine, initial_size=300)
    pattern = esc(f"missing_classes: {nine} leave ") + r"(\d+)" + esc(" samples for an initial")
    with pytest.raises(ConfigError, match=pattern) as info:
        Experiment(config)
    left = int(re.search(pattern, str(info.value)).group(1))
    assert 0 < left < 300  # only the nines are eligible
    # the same nine missing classes with an initial pool the nines can fill are fine
    exp = build(missing_classes=nine, initial_size=50)
    assert set(exp.task.y_true[exp.pool.labeled].tolist()) == {9}


def test_missing_classes_accept_indices_on_digits():
    exp = build(missing_classes=[0, 1])  # ints, as YAML would give them
    assert exp.config.missing_classes == ("0", "1")
    assert exp.missing_class_ids.tolist() == [0, 1]
    labeled_classes = set(exp.task.y_true[exp.pool.labeled].tolist())
    assert labeled_classes.isdisjoint({0, 1}) and len(labeled_classes) == 8


def _named_data(n_per_class: int = 60) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = torch.randint(0, 256, (len(y), 1, 8, 8), dtype=torch.uint8, generator=gen)
    return ImageData("toy", x, y, x[:30], y[:30], ["cat", "dog", "bird"], "crop")


def test_missing_classes_accept_names_and_indices():
    data = _named_data()
    config = make_config(
        device="cpu", val_size=10, initial_size=20, query_size=5, rounds=2, subqueries=2
    )
    exp = Experiment(config.replace(missing_classes=["cat", 2]), data=data)
    assert exp.missing_class_ids.tolist() == [0, 2]
    assert set(exp.task.y_true[exp.pool.labeled].tolist()) == {1}  # only dogs
    # a name and the index of the same class count once
    exp = Experiment(config.replace(missing_classes=["dog", "1"]), data=data)
    assert exp.missing_class_ids.tolist() == [1]
    with pytest.raises(ConfigError, match=esc("missing_classes: no class 'horse' in ")) as info:
        Experiment(config.replace(missing_classes=["horse"]), data=data)
    assert "['cat', 'dog', 'bird'] (or their indices 0..2)" in str(info.value)


# ------------------------------------------------------------------ data paths and the device
def test_missing_npz_path_is_named(tmp_path, no_training):
    path = tmp_path / "nowhere" / "data.npz"
    config = make_config(**DIGITS | {"dataset": f"npz:{path}"})
    message = f"dataset: no such file {str(path)!r} (from 'npz:{path}')"
    with pytest.raises(DataError, match=esc(message)):
        Experiment(config)
    with pytest.raises(DataError, match=esc(message)):
        pal.run_experiment(config)


def test_missing_folder_path_is_named(tmp_path, no_training):
    path = tmp_path / "no_such_tree"
    config = make_config(**DIGITS | {"dataset": f"folder:{path}"})
    with pytest.raises(DataError, match=esc("dataset: no such folder or archive")) as info:
        Experiment(config)
    assert f"(from 'folder:{path}')" in str(info.value)
    assert str(path.resolve()) in str(info.value)
    with pytest.raises(DataError, match=esc(f"(from 'folder:{path}')")):
        pal.run_experiment(config)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_names_device(no_training):
    config = make_config(**DIGITS | {"device": "cuda"})
    message = "device: 'cuda' asked for but no CUDA GPU is available; use auto or cpu"
    with pytest.raises(ConfigError, match=esc(message)):
        Experiment(config)
    with pytest.raises(ConfigError, match=esc(message)):
        pal.run_experiment(config)


def test_auto_device_never_fails():
    exp = build(device="auto", rounds=0)
    assert exp.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------ make_config sources
def _write_yaml(path: Path, values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_make_config_from_nothing_is_the_defaults():
    assert make_config() == Config()
    assert make_config(seed=4) == Config(seed=4)


def test_make_config_from_a_dict_with_overrides():
    values = {"rounds": 2, "seed": 4, "lambda2": 0.5}
    c = make_config(values, seed=5, strategy="random")
    assert (c.rounds, c.seed, c.lambda2, c.strategy) == (2, 5, 0.5, "random")
    assert values == {"rounds": 2, "seed": 4, "lambda2": 0.5}  # the caller's dict is untouched


def test_make_config_from_a_yaml_path_with_overrides(tmp_path):
    path = _write_yaml(tmp_path / "c.yaml", {"rounds": 2, "seed": 4, "missing_classes": [0, 1]})
    for source in (path, str(path)):
        c = make_config(source, seed=9)
        assert (c.rounds, c.seed, c.missing_classes) == (2, 9, ("0", "1"))
    assert Config.from_yaml(path) == make_config(path)
    (tmp_path / "empty.yaml").write_text("")
    assert make_config(tmp_path / "empty.yaml") == Config()


def test_make_config_from_a_config_with_overrides():
    base = Config(rounds=2, seed=4, missing_classes=("3",))
    c = make_config(base, seed=7)
    assert (c.rounds, c.seed, c.missing_classes) == (2, 7, ("3",))
    assert base.seed == 4  # frozen, unchanged
    assert make_config(base) == base


def test_make_config_rejects_other_types():
    with pytest.raises(ConfigError, match=esc("config: expected a Config, a dict or a YAML path")):
        make_config(42)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "3\n"])
def test_yaml_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    message = f"config: {str(path)!r} must hold a mapping of config keys"
    with pytest.raises(ConfigError, match=esc(message)):
        make_config(path)


def test_missing_yaml_path_is_named(tmp_path, no_training):
    path = tmp_path / "absent.yaml"
    for make in (lambda: make_config(path), lambda: pal.run_experiment(str(path))):
        with pytest.raises(ConfigError, match=esc(f"config: no such YAML file {str(path)!r}")):
            make()


def test_malformed_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match=r"config: cannot read .*bad\.yaml.* as YAML"):
        make_config(path)


def test_yaml_reads_exponent_floats(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("lr_task: 1e-3\nweight_decay: 5e-4\n")
    config = make_config(path)
    assert config.lr_task == 0.001 and config.weight_decay == 0.0005


def test_yaml_with_an_unknown_key(tmp_path):
    path = _write_yaml(tmp_path / "typo.yaml", {"lamda2": 0})
    with pytest.raises(ConfigError, match=esc("'lamda2' (did you mean 'lambda2'?)")):
        make_config(path)


def test_yaml_with_a_bad_value_overridden_by_a_keyword_is_fine(tmp_path):
    path = _write_yaml(tmp_path / "bad.yaml", {"lambda1": -1})
    with pytest.raises(ConfigError, match=esc("lambda1: must be >= 0")):
        make_config(path)
    assert make_config(path, lambda1=2).lambda1 == 2.0


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_presets_are_valid(preset):
    c = make_config(REPO / "configs" / preset)
    assert c.dataset and c.strategy == "pal"


# ------------------------------------------------------------------ to_dict round trips
def test_to_dict_round_trips():
    c = Config(
        dataset="npz:/x/y.npz",
        missing_classes=("0", "cat"),
        pool_size=500,
        image_size=None,
        lambda2=0.25,
        download=True,
        strategy="entropy",
    )
    d = c.to_dict()
    assert set(d) == set(field_names())
    assert d["missing_classes"] == ["0", "cat"] and d["pool_size"] == 500
    assert Config.from_dict(d) == c
    assert make_config(d) == c
    assert Config.from_dict(yaml.safe_load(yaml.safe_dump(d))) == c  # safe_dump: plain types only
    assert Config.from_dict(json.loads(json.dumps(d))) == c
    assert Config().to_dict() == Config.from_dict(Config().to_dict()).to_dict()


def test_to_dict_through_a_yaml_file(tmp_path):
    c = Config(seed=11, missing_classes=("1", "2"), rounds=3, label_noise=0.2)
    path = _write_yaml(tmp_path / "saved.yaml", c.to_dict())
    assert make_config(path) == c
    assert np.isclose(make_config(path).label_noise, 0.2)


def test_a_job_pair_naming_no_variant_is_refused(tmp_path):
    from pal.jobs import load_job

    job = tmp_path / "job.py"
    job.write_text(
        "def get_job():\n"
        "    return {'name': 'p', 'base': {'dataset': 'digits'},\n"
        "            'variants': {'a': {}, 'b': {'seed': 1}}, 'seeds': [0],\n"
        "            'pairs': {'a': 'c'}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"pairs\.a: 'c' is not a variant; variants: \['a', 'b'\]"
    ):
        load_job(job)
