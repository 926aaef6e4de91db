"""The experiment config: one flat dataclass of plain values.

Flat keys so that a sweep can set any of them, YAML can hold them and MLflow can log them. The
config is validated on construction (types and ranges); what needs the dataset (class names,
pool size) is checked by :func:`pal.loop.Experiment` before any training starts.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the field."""


GROUPS = ("data", "method", "budget", "machine")
"""The groups of config keys (see :class:`Config`; :func:`keys_in`, :func:`group_of`)."""

AUGMENTS = ("none", "crop", "crop_flip")
"""The task network's augmentations (config ``augment``, whose ``auto`` is the dataset's own)."""

SCORE_NORMS = ("none", "zscore", "rank")
"""What :func:`pal.scoring.normalize_score` can do to a term before it is weighted (config
``score_norm``)."""


def _key(group: str, default: Any, choices: tuple[str, ...] | None) -> Any:
    """A :class:`Config` field: its group and, for a key with a fixed set of values, those."""
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata={"group": group, "choices": choices})


def _data(default: Any, *, choices: tuple[str, ...] | None = None) -> Any:
    return _key("data", default, choices)


def _method(default: Any, *, choices: tuple[str, ...] | None = None) -> Any:
    return _key("method", default, choices)


def _budget(default: Any, *, choices: tuple[str, ...] | None = None) -> Any:
    return _key("budget", default, choices)


def _machine(default: Any, *, choices: tuple[str, ...] | None = None) -> Any:
    return _key("machine", default, choices)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides an experiment. ``seed`` decides all randomness.

    Pool sizes: ``initial_*`` and ``query_*`` are fractions of the pool (the training split less
    the validation set); an explicit ``initial_size`` / ``query_size`` wins over the fraction.
    The validation set is ``val_size`` images drawn from the pool, unless the dataset declares
    its own (a manifest's ``val`` rows): then ``val_size`` is not used and ``pool_size`` counts
    the images drawn besides the validation set.

    Fitting: ``model_selection=best_val`` keeps the task network's epoch with the best validation
    metric and the scoring network's with the lowest validation loss, out of ``val_checks``
    evaluations spread over the epochs (``last``, or no validation set: the last epoch).
    ``fit_threshold`` is the training-set accuracy below which a round warns that a network
    underfits (``null``: 0.99 for classification, off for segmentation). ``epochs_task_max``
    (``null``: off) trains the task network until it fits: a network below ``fit_threshold`` on
    its training set is trained again from scratch with twice the epochs, up to
    ``epochs_task_max``, and the round records the epochs it kept. ``randaugment_ops`` /
    ``randaugment_magnitude`` add RandAugment to the task network's augmentation and ``swa``
    averages its weights from ``swa_start`` of the epochs on.

    Large pools: images whose bytes exceed ``device_budget_gb`` (null: a quarter of a GPU's
    memory, half of the host's on a CPU; 0: always) stay in host memory and are streamed to the
    device a batch at a time, with the same results (:mod:`pal.placement`). With a Ray cluster
    connected, an unlabeled pool of at least ``distributed_min_pool`` images (null: never) is
    scored by ``distributed_workers`` Ray Data actors (null: one per free GPU, or per free CPU on
    a CPU cluster; :mod:`pal.distributed`). ``candidate_pool`` (null: off) scores only a seeded
    random subset of that many unlabeled images per query (baal's ``max_sample``).

    Groups: every key belongs to one of :data:`GROUPS` (:func:`keys_in`, :func:`group_of`), by
    what taking it to another pool would mean. ``method``: how the strategy chooses and how the
    networks learn (strategy, lambdas, sub-queries, fine-tune, ``score_norm``, backbones, epochs,
    learning rates, optimizer, schedule, ``batch_size``, dropout, ``augment``, model selection and
    the fit check, the SimCLR, DBAL and VAAL knobs): what a sweep searches and what ``pal label
    init --from-sweep/--from-run`` carries to a labeling project. ``data``: which images and what
    is done to them before any learning (dataset, ``data_dir``, download, ``image_size``,
    ``pool_size``, ``val_size``, ``label_noise``, ``missing_classes``). ``budget``: how many labels
    are bought and when (``initial_*``, ``query_*``, rounds), and ``seed``, the replicate: a study
    varies it and never tunes it. ``machine``: where and how cheaply it is computed, sized to the
    computer and the pool's scale (device, precision, ``memory_format``, compile,
    ``eval_batch_size``, ``device_budget_gb``, ``distributed_*``), with ``candidate_pool``: it
    changes which images a query scores, but as a cap on the scoring's cost chosen for a pool's
    size and a machine, not a setting learned on one pool for another. Only ``method`` keys pass
    from one experiment to another; the rest belong to the user's pool, budget and computer.
    A key with a fixed set of values holds them in its field metadata (:func:`choices_of`).
    """

    # data
    dataset: str = _data("digits")
    data_dir: str = _data("data")
    download: bool = _data(False)
    pool_size: int | None = _data(None)
    image_size: int | None = _data(None)
    augment: str = _method("auto", choices=("auto", *AUGMENTS))
    # active learning protocol
    strategy: str = _method("pal")
    initial_fraction: float = _budget(0.1)
    initial_size: int | None = _budget(None)
    query_fraction: float = _budget(0.05)
    query_size: int | None = _budget(None)
    rounds: int = _budget(6)
    val_size: int = _data(100)
    seed: int = _budget(0)
    label_noise: float = _data(0.0)
    missing_classes: tuple[str, ...] = _data(())
    # networks and training
    task_backbone: str = _method("cnn")
    scoring_backbone: str = _method("cnn")
    epochs_task: int = _method(30)
    epochs_scoring: int = _method(30)
    epochs_scoring_warm: int | None = _method(None)
    lr_task: float = _method(0.05)
    lr_scoring: float = _method(0.05)
    optimizer: str = _method("sgd", choices=("sgd", "adam"))
    lr_schedule: str = _method("cosine", choices=("cosine", "constant"))
    momentum: float = _method(0.9)
    weight_decay: float = _method(5e-4)
    batch_size: int = _method(64)
    eval_batch_size: int = _machine(512)
    dropout: float = _method(0.0)
    device: str = _machine("auto", choices=("auto", "cpu", "cuda"))
    # large pools: where the images live, Ray Data scoring, a candidate pre-filter
    device_budget_gb: float | None = _machine(None)
    distributed_min_pool: int | None = _machine(100_000)
    distributed_workers: int | None = _machine(None)
    candidate_pool: int | None = _machine(None)
    # fitting: checkpoint selection on validation, the fit check, regularisation (task network)
    model_selection: str = _method("best_val", choices=("best_val", "last"))
    val_checks: int = _method(10)
    fit_threshold: float | None = _method(None)
    epochs_task_max: int | None = _method(None)
    randaugment_ops: int = _method(0)
    randaugment_magnitude: float = _method(0.3)
    swa: bool = _method(False)
    swa_start: float = _method(0.75)
    # speed: bf16 autocast and channels-last where they pay (GPUs), torch.compile on request
    precision: str = _machine("auto", choices=("auto", "fp32", "bf16"))
    memory_format: str = _machine("auto", choices=("auto", "contiguous", "channels_last"))
    compile: bool = _machine(False)
    # PAL (Eq. 4 and Section 3.3)
    lambda1: float = _method(1.0)
    lambda2: float = _method(1.0)
    subqueries: int = _method(5)
    finetune_scope: str = _method("head", choices=("head", "all"))
    finetune_start: str = _method("continue", choices=("continue", "restart"))
    finetune_epochs: int = _method(20)
    finetune_lr_factor: float = _method(1.0)
    score_norm: str = _method("none", choices=SCORE_NORMS)
    # PAL for segmentation: SimCLR's NT-Xent temperature (Section 3.1, Eq. 2)
    simclr_temperature: float = _method(0.5)
    # baselines (DBAL: MC dropout, Gal et al. 2017)
    mc_samples: int = _method(20)
    dbal_acquisition: str = _method("bald", choices=("bald", "max_entropy"))
    # baselines (VAAL: VAE + adversarial discriminator, Sinha et al. 2019)
    vaal_latent_dim: int = _method(32)
    vaal_epochs: int = _method(10)
    vaal_lr: float = _method(5e-4)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(
                self, f.name, _coerce(f.name, _hints()[f.name], getattr(self, f.name))
            )
        _check_ranges(self)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        unknown = [k for k in values if k not in _field_names()]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown))
        return cls(**dict(values))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Config:
        return cls.from_dict(load_yaml(path))

    def replace(self, **changes: Any) -> Config:
        unknown = [k for k in changes if k not in _field_names()]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown))
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Config:
        """The config an MLflow run logged as ``params`` (:meth:`to_params`), every value read
        back by :func:`parse_param`; a key the params lack (a run older than it) is the default.
        """
        unknown = [k for k in params if k not in _field_names()]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown))
        return cls(**{k: parse_param(k, v) for k, v in params.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["missing_classes"] = list(self.missing_classes)
        return out

    def to_params(self) -> dict[str, str]:
        """The config as MLflow params (strings, :func:`param_value`); :meth:`from_params` reads
        them back."""
        return {k: param_value(v) for k, v in self.to_dict().items()}


def make_config(config: Config | Mapping | str | os.PathLike | None = None, **overrides) -> Config:
    """Build a :class:`Config` from a config, a dict, a YAML path or nothing; keywords override."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, Config):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        base = load_yaml(config)
    else:
        raise ConfigError(
            f"config: expected a Config, a dict or a YAML path, got {type(config).__name__}"
        )
    base.update(overrides)
    return Config.from_dict(base)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: no such YAML file {str(p)!r}")
    with p.open() as fh:
        try:
            values = yaml.load(fh, Loader=_YamlLoader) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: cannot read {str(p)!r} as YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config: {str(p)!r} must hold a mapping of config keys, not {values!r}")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``"lambda2=0"`` -> ``("lambda2", 0)``; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in _field_names():
        raise ConfigError(_unknown_keys_message([key]))
    try:
        value = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot read value {raw!r}: {err}") from None
    return key, value


def field_names() -> list[str]:
    return list(_field_names())


def keys_in(group: str) -> tuple[str, ...]:
    """The config keys of ``group`` (one of :data:`GROUPS`), in field order."""
    if group not in GROUPS:
        raise ConfigError(f"group: must be one of {list(GROUPS)}, got {group!r}")
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["group"] == group)


def group_of(key: str) -> str:
    """The group (one of :data:`GROUPS`) of config key ``key``."""
    return _field(key).metadata["group"]


def choices_of(key: str) -> tuple[str, ...] | None:
    """The values config key ``key`` may take, ``None`` for a key without a fixed set."""
    return _field(key).metadata["choices"]


def param_value(value: Any) -> str:
    """A value as an MLflow param, which holds text: a list or tuple as a JSON list, a dict as
    JSON, anything else as ``str()`` (``None`` -> ``'None'``, ``True`` -> ``'True'``, a float as
    its shortest repr, which reads back to the same float)."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def parse_param(key: str, text: str) -> Any:
    """The value of config key ``key`` that :func:`param_value` logged as ``text``, read by the
    key's type: ``'None'`` -> ``None`` (a key that may be null, or one that is not text),
    ``'True'`` / ``'False'`` -> bools, numbers, a JSON list (or a Python tuple or list literal)
    -> a list, text as it is. Text that is not of the key's type comes back unchanged, for
    :class:`Config` to refuse with the key's name.
    """
    hint = _hints()[_field(key).name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if text == "None" and (optional or base is not str):
        return None
    if typing.get_origin(base) is tuple:
        for read in (json.loads, ast.literal_eval):
            try:
                return read(text)
            except (ValueError, SyntaxError):  # json's JSONDecodeError is a ValueError
                continue
        return text
    if base is bool:
        return {"true": True, "false": False}.get(text.lower(), text)
    if base in (int, float):
        for read in (int, float) if base is int else (float,):
            try:
                return read(text)
            except ValueError:
                continue
        return text
    return text


# ---------------------------------------------------------------------- internals
class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string (it wants a dot); learning rates are written so."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@functools.cache
def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Config)}


def _field(key: str) -> dataclasses.Field:
    """The :class:`Config` field ``key``; an unknown key is a :class:`ConfigError`."""
    if key not in _fields():
        raise ConfigError(_unknown_keys_message([key]))
    return _fields()[key]


def _field_names() -> tuple[str, ...]:
    return tuple(_fields())


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _unknown_keys_message(keys: list[str]) -> str:
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, _field_names(), n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown config key(s) {', '.join(parts)}; valid keys: {list(_field_names())}"


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: must be set (got null)")
    base = next(a for a in args if a is not type(None)) if optional else hint
    origin = typing.get_origin(base)
    if origin is tuple:
        if isinstance(value, (str, int)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _check_ranges(c: Config) -> None:
    def need(ok: bool, field: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{field}: must be {allowed}, got {getattr(c, field)!r}")

    for f in dataclasses.fields(c):
        choices = f.metadata["choices"]
        if choices is not None:
            need(getattr(c, f.name) in choices, f.name, f"one of {list(choices)}")
    need(0.0 < c.initial_fraction <= 1.0, "initial_fraction", "in (0, 1]")
    need(0.0 < c.query_fraction <= 1.0, "query_fraction", "in (0, 1]")
    need(c.initial_size is None or c.initial_size >= 1, "initial_size", ">= 1 or null")
    need(c.query_size is None or c.query_size >= 1, "query_size", ">= 1 or null")
    need(c.pool_size is None or c.pool_size >= 2, "pool_size", ">= 2 or null")
    need(c.image_size is None or c.image_size >= 4, "image_size", ">= 4 or null")
    need(c.rounds >= 0, "rounds", ">= 0")
    need(c.val_size >= 0, "val_size", ">= 0")
    need(c.seed >= 0, "seed", ">= 0")
    need(0.0 <= c.label_noise < 1.0, "label_noise", "in [0, 1)")
    need(c.lambda1 >= 0.0, "lambda1", ">= 0 (Eq. 3: lambda >= 0)")
    need(c.lambda2 >= 0.0, "lambda2", ">= 0 (Eq. 4)")
    need(c.subqueries >= 1, "subqueries", ">= 1")
    need(c.finetune_epochs >= 0, "finetune_epochs", ">= 0")
    need(c.finetune_lr_factor > 0.0, "finetune_lr_factor", "> 0")
    need(c.simclr_temperature > 0.0, "simclr_temperature", "> 0")
    need(c.epochs_task >= 1, "epochs_task", ">= 1")
    need(c.epochs_scoring >= 1, "epochs_scoring", ">= 1")
    need(
        c.epochs_scoring_warm is None or c.epochs_scoring_warm >= 1,
        "epochs_scoring_warm",
        "null (the scoring network from scratch every query) or >= 1",
    )
    need(c.lr_task > 0.0, "lr_task", "> 0")
    need(c.lr_scoring > 0.0, "lr_scoring", "> 0")
    need(0.0 <= c.momentum < 1.0, "momentum", "in [0, 1)")
    need(c.weight_decay >= 0.0, "weight_decay", ">= 0")
    need(c.batch_size >= 2, "batch_size", ">= 2")
    need(c.eval_batch_size >= 1, "eval_batch_size", ">= 1")
    need(c.device_budget_gb is None or c.device_budget_gb >= 0, "device_budget_gb", ">= 0 or null")
    need(
        c.distributed_min_pool is None or c.distributed_min_pool >= 0,
        "distributed_min_pool",
        ">= 0 or null",
    )
    need(
        c.distributed_workers is None or c.distributed_workers >= 1,
        "distributed_workers",
        ">= 1 or null",
    )
    need(c.candidate_pool is None or c.candidate_pool >= 1, "candidate_pool", ">= 1 or null")
    need(0.0 <= c.dropout < 1.0, "dropout", "in [0, 1)")
    need(c.val_checks >= 1, "val_checks", ">= 1")
    need(
        c.fit_threshold is None or 0.0 <= c.fit_threshold <= 1.0,
        "fit_threshold",
        "in [0, 1] or null",
    )
    need(
        c.epochs_task_max is None or c.epochs_task_max >= c.epochs_task,
        "epochs_task_max",
        f">= epochs_task ({c.epochs_task}) or null",
    )
    need(c.randaugment_ops >= 0, "randaugment_ops", ">= 0")
    need(0.0 <= c.randaugment_magnitude <= 1.0, "randaugment_magnitude", "in [0, 1]")
    need(0.0 < c.swa_start < 1.0, "swa_start", "in (0, 1)")
    need(c.mc_samples >= 2, "mc_samples", ">= 2")
    need(c.vaal_latent_dim >= 2, "vaal_latent_dim", ">= 2")
    need(c.vaal_epochs >= 1, "vaal_epochs", ">= 1")
    need(c.vaal_lr > 0.0, "vaal_lr", "> 0")
    need(len(set(c.missing_classes)) == len(c.missing_classes), "missing_classes", "unique")
    need(bool(c.dataset), "dataset", "a dataset name")
