"""The strategy contract: one signature for every query strategy.

The round loop hands a strategy a :class:`QueryContext` (what the round knows) and a query size
``n`` and gets back a :class:`Query` of exactly ``n`` unique dataset indices from the unlabeled
pool. The loop never asks which strategy it holds.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pal.registry import Registry
from pal.rng import numpy_rng, torch_generator

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
    label_free: bool = False
    """Whether the strategy can choose with no label at all (:meth:`query_label_free`: ``pal
    label``'s first batch)."""
    cpu_bf16: bool = False
    """Whether its accuracy held in bf16 autocast on a CPU: in ``ablations/mnist_precision.py``
    or ``mnist_precision_one_query.py`` (MNIST preset, 3 seeds) no precision difference detected
    by the paired test, and every round of every seed within 1 point of the same seed's fp32 run
    or within what a change of memory layout alone moves it (``docs/performance.md``).
    ``precision: auto`` turns bf16 on for CPUs with bf16 units once every classification
    strategy holds it (:func:`cpu_bf16_proven`)."""

    def __init__(self, config: Config):
        self.config = config

    def state_dict(self) -> dict[str, Any]:
        """What the strategy carries from one query to the next (tensors allowed; a trial's
        checkpoint saves it with ``torch.save``): nothing by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state``; strategies without state ignore it."""
        return None

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

    def query_label_free(self, ctx: QueryContext, n: int) -> Query:
        """Choose ``n`` samples of ``ctx.unlabeled`` with no label and no task network
        (``ctx.labeled`` empty, ``ctx.task_model`` ``None``), for strategies with
        :attr:`label_free`.

        Raises:
            ValueError: the strategy cannot choose without labels.
        """
        if not self.label_free:
            raise ValueError(f"strategy {self.name!r} cannot choose with no label")
        return self._checked(ctx, n, self.choose_label_free)

    def query(self, ctx: QueryContext, n: int) -> Query:
        """Choose ``n`` samples of ``ctx.unlabeled``; raises :class:`PoolExhaustedError`."""
        return self._checked(ctx, n, self.choose)

    def _checked(self, ctx: QueryContext, n: int, choose) -> Query:
        available = ctx.unlabeled.numel()
        if n < 1:
            raise ValueError(f"query size must be >= 1, got {n}")
        if n > available:
            raise PoolExhaustedError(
                f"query of {n} asked from an unlabeled pool of {available} samples"
            )
        result = choose(ctx, n)
        chosen = result.indices
        if chosen.numel() != n or torch.unique(chosen).numel() != n:
            raise RuntimeError(f"strategy {self.name!r} returned {chosen.numel()} indices, not {n}")
        if not torch.isin(chosen, ctx.unlabeled).all():
            raise RuntimeError(f"strategy {self.name!r} chose indices outside the unlabeled pool")
        return result

    @abc.abstractmethod
    def choose(self, ctx: QueryContext, n: int) -> Query:
        """Return exactly ``n`` unique dataset indices drawn from ``ctx.unlabeled``."""

    def choose_label_free(self, ctx: QueryContext, n: int) -> Query:
        """:meth:`choose` with no label (strategies with :attr:`label_free` override it)."""
        raise NotImplementedError


LABEL_FREE_SAMPLE = 5000
"""At most this many pool images (a seeded sample) train a label-free pick's pretext network."""


def label_free_sample(ctx: QueryContext) -> QueryContext:
    """``ctx`` whose ``labeled`` is a seeded sample (``(seed, "label-free-sample")``) of at most
    :data:`LABEL_FREE_SAMPLE` images of ``ctx.unlabeled``: what a label-free pick trains its
    pretext (rotation) head on, their labels unknown."""
    pool = ctx.unlabeled
    rng = numpy_rng(ctx.seed, "label-free-sample")
    take = min(pool.numel(), LABEL_FREE_SAMPLE)
    sample = pool[torch.as_tensor(np.sort(rng.choice(pool.numel(), take, replace=False)))]
    return dataclasses.replace(ctx, labeled=sample.to(pool.device))


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategy")


def register_strategy(name: str):
    """Class decorator: register a :class:`Strategy` subclass under ``name``."""
    return STRATEGIES.register_named(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def build_strategy(config: Config) -> Strategy:
    return STRATEGIES.get(config.strategy)(config)


def label_free_strategies() -> list[str]:
    """The registered strategies that can choose with no label (:attr:`Strategy.label_free`)."""
    return [n for n in STRATEGIES.names() if STRATEGIES.get(n).label_free]


def cpu_bf16_proven() -> bool:
    """Whether every registered classification strategy holds its accuracy in bf16 on a CPU
    (:attr:`Strategy.cpu_bf16`): with some strategies in bf16 and others in fp32, a study
    comparing them would compare precisions too (the same seed's round-0 model would differ)."""
    classification = [STRATEGIES.get(n) for n in STRATEGIES.names()]
    return all(s.cpu_bf16 for s in classification if "classification" in s.tasks)
