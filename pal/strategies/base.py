"""The strategy contract: one signature for every query strategy.

The round loop hands a strategy a :class:`QueryContext` (what the round knows) and a query size
``n`` and gets back a :class:`Query` of exactly ``n`` unique dataset indices from the unlabeled
pool. The loop never asks which strategy it holds.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pal.registry import Registry
from pal.rng import torch_generator

if TYPE_CHECKING:
    from pal.config import Config
    from pal.placement import Images
    from pal.training import Normalizer, ProgressFn


class PoolExhaustedError(ValueError):
    """A query asks for more samples than the unlabeled pool holds."""


@dataclasses.dataclass
class QueryContext:
    """What a round knows when it queries.

    Attributes:
        config: the experiment config.
        x: ``uint8 [N, C, H, W]``, every training image (index = dataset index): a tensor on
            ``device``, or a :class:`pal.placement.HostImages` streamed to it above the device
            budget; read batches with :func:`pal.placement.take` and chunks with ``x.split``.
        labels: the oracle's annotations, valid at ``labeled`` only: ``int64 [N]`` (possibly
            noisy) labels for classification, ``uint8 [N, H, W]`` masks (255 = ignore) for
            segmentation.
        labeled: ``int64 [L]`` dataset indices of ``D_L``.
        unlabeled: ``int64 [U]`` dataset indices of ``D_U`` that may be queried.
        num_classes: number of classes ``K``.
        task_model: the task network trained on ``D_L`` this round (eval mode is the caller's).
        normalize: ``uint8 -> float`` input normalisation.
        augment_mode: ``none``, ``crop`` or ``crop_flip``, for strategies that train networks.
        seed: the seed of this query; strategies derive every random draw from it.
        progress: optional per-epoch callback for strategies that train networks.
        task: ``"classification"`` or ``"segmentation"``.
        val: ``int64 [V]`` dataset indices of the validation set (labeled by the oracle, never
            queried): what strategies that train networks select and check them on.
    """

    config: Config
    x: Images
    labels: torch.Tensor
    labeled: torch.Tensor
    unlabeled: torch.Tensor
    num_classes: int
    task_model: nn.Module
    normalize: Normalizer
    augment_mode: str
    seed: int
    progress: ProgressFn | None = None
    task: str = "classification"
    val: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.x.device

    def generator(self, *purpose: str | int) -> torch.Generator:
        return torch_generator(self.device, self.seed, *purpose)


@dataclasses.dataclass
class Query:
    """A strategy's answer: ``indices`` ``int64 [n]`` (dataset indices, in the order chosen),
    strategy-specific ``metrics`` (plain floats, logged per round), ``fit_keys``, the metrics
    that are a network's accuracy on its own training set (the loop warns when one is below
    ``fit_threshold``), and ``scores``: per chosen sample, what the strategy ranked it by
    (name -> float ``[n]`` aligned with ``indices``; what ``pal label`` writes beside a batch)."""

    indices: torch.Tensor
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    fit_keys: tuple[str, ...] = ()
    scores: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


class Strategy(abc.ABC):
    """Base class: validates the request and the answer; subclasses implement :meth:`choose`."""

    name: str = ""
    tasks: tuple[str, ...] = ("classification",)
    """The tasks the strategy runs on; the loop refuses any other before training."""

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def check_config(
        cls,
        config: Config,
        query_size: int,
        image_hw: tuple[int, int],
        task: str = "classification",
    ) -> None:
        """Raise :class:`pal.config.ConfigError` for settings this strategy cannot run with.

        Called by the loop before any training, once the sizes and the ``task`` are known.
        Accepts everything by default; strategies with constraints override it."""
        return None

    def query(self, ctx: QueryContext, n: int) -> Query:
        """Choose ``n`` samples of ``ctx.unlabeled``; raises :class:`PoolExhaustedError`."""
        available = ctx.unlabeled.numel()
        if n < 1:
            raise ValueError(f"query size must be >= 1, got {n}")
        if n > available:
            raise PoolExhaustedError(
                f"query of {n} asked from an unlabeled pool of {available} samples"
            )
        result = self.choose(ctx, n)
        chosen = result.indices
        if chosen.numel() != n or torch.unique(chosen).numel() != n:
            raise RuntimeError(f"strategy {self.name!r} returned {chosen.numel()} indices, not {n}")
        if not torch.isin(chosen, ctx.unlabeled).all():
            raise RuntimeError(f"strategy {self.name!r} chose indices outside the unlabeled pool")
        return result

    @abc.abstractmethod
    def choose(self, ctx: QueryContext, n: int) -> Query:
        """Return exactly ``n`` unique dataset indices drawn from ``ctx.unlabeled``."""


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategy")


def register_strategy(name: str):
    """Class decorator: register a :class:`Strategy` subclass under ``name``."""
    return STRATEGIES.register_named(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def build_strategy(config: Config) -> Strategy:
    return STRATEGIES.get(config.strategy)(config)
