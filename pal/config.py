"""The experiment config: one flat dataclass of plain values.

Flat keys so that a sweep can set any of them, YAML can hold them and MLflow can log them. The
config is validated on construction (types and ranges); what needs the dataset (class names,
pool size) is checked by :func:`pal.loop.Experiment` before any training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
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
    """

    # data
    dataset: str = "digits"
    data_dir: str = "data"
    download: bool = False
    pool_size: int | None = None
    image_size: int | None = None
    augment: str = "auto"
    # active learning protocol
    strategy: str = "pal"
    initial_fraction: float = 0.1
    initial_size: int | None = None
    query_fraction: float = 0.05
    query_size: int | None = None
    rounds: int = 6
    val_size: int = 100
    seed: int = 0
    label_noise: float = 0.0
    missing_classes: tuple[str, ...] = ()
    # networks and training
    task_backbone: str = "cnn"
    scoring_backbone: str = "cnn"
    epochs_task: int = 30
    epochs_scoring: int = 30
    lr_task: float = 0.05
    lr_scoring: float = 0.05
    optimizer: str = "sgd"
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    eval_batch_size: int = 512
    dropout: float = 0.0
    device: str = "auto"
    # large pools: where the images live, Ray Data scoring, a candidate pre-filter
    device_budget_gb: float | None = None
    distributed_min_pool: int | None = 100_000
    distributed_workers: int | None = None
    candidate_pool: int | None = None
    # fitting: checkpoint selection on validation, the fit check, regularisation (task network)
    model_selection: str = "best_val"
    val_checks: int = 10
    fit_threshold: float | None = None
    epochs_task_max: int | None = None
    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.3
    swa: bool = False
    swa_start: float = 0.75
    # speed: bf16 autocast and channels-last where they pay (GPUs), torch.compile on request
    precision: str = "auto"
    memory_format: str = "auto"
    compile: bool = False
    # PAL (Eq. 4 and Section 3.3)
    lambda1: float = 1.0
    lambda2: float = 1.0
    subqueries: int = 5
    finetune_scope: str = "head"
    finetune_start: str = "continue"
    finetune_epochs: int = 20
    finetune_lr_factor: float = 1.0
    score_norm: str = "none"
    # PAL for segmentation: SimCLR's NT-Xent temperature (Section 3.1, Eq. 2)
    simclr_temperature: float = 0.5
    # baselines (DBAL: MC dropout, Gal et al. 2017)
    mc_samples: int = 20
    dbal_acquisition: str = "bald"
    # baselines (VAAL: VAE + adversarial discriminator, Sinha et al. 2019)
    vaal_latent_dim: int = 32
    vaal_epochs: int = 10
    vaal_lr: float = 5e-4

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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["missing_classes"] = list(self.missing_classes)
        return out


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


# ---------------------------------------------------------------------- internals
class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string (it wants a dot); learning rates are written so."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adam"),
    "lr_schedule": ("cosine", "constant"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),
    "memory_format": ("auto", "contiguous", "channels_last"),
    "finetune_scope": ("head", "all"),
    "finetune_start": ("continue", "restart"),
    "score_norm": ("none", "zscore", "rank"),
    "augment": ("auto", "none", "crop", "crop_flip"),
    "dbal_acquisition": ("bald", "max_entropy"),
    "model_selection": ("best_val", "last"),
}


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


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

    for field, choices in CHOICES.items():
        need(getattr(c, field) in choices, field, f"one of {list(choices)}")
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
