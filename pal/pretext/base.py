"""PAL's pretext task as a seam: what :class:`pal.strategies.pal.PALStrategy` asks of it.

PAL's query (Algorithm 1) is the same for every task: train a scoring network on ``D_L``, score
the unlabeled pool with a self-supervision score ``S_S`` and a classification score ``S_C``, and
take ``K`` sub-queries, each after a fine-tune on the query so far gives a diversity score
``S_D`` (Eq. 4). What differs is the pretext task: rotation prediction for classification
(:mod:`pal.pretext.rotation`, Eq. 1), SimCLR for segmentation (:mod:`pal.pretext.simclr`,
Eq. 2). A :class:`Pretext` is those differences and nothing else:

- :meth:`Pretext.network`: the scoring network, built under a seeded init by
  :meth:`Pretext.build`;
- :meth:`Pretext.training_loss`: the loss of one batch of ``D_L``, trained on by
  :meth:`Pretext.train`;
- :meth:`Pretext.score`: ``S_S`` and ``S_C`` of the pool, and what a head fine-tune needs;
- :meth:`Pretext.finetuner`: ``(picked, remaining) -> S_D``, the sub-query fine-tune.

Pretexts are registered by name (:func:`register_pretext`) and found by task
(:func:`pretext_for`), so a pretext for a new task is one module that registers a subclass.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from pal.config import ConfigError
from pal.models import dropout_generator
from pal.registry import Registry
from pal.rng import seeded_init
from pal.training import FitReport, FitSpec, Selection, fit

if TYPE_CHECKING:
    from pal.config import Config
    from pal.strategies.base import QueryContext

LossFn = Callable[[torch.Tensor], torch.Tensor]
"""``loss(positions int64 [B]) -> scalar``: the training loss of the batch ``D_L[positions]``."""

DiversityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``diversity(picked [m], remaining [R]) -> S_D [R]`` (positions in the pool, Eq. 4): fine-tune
on ``picked``, then score ``remaining``; what :func:`pal.scoring.select_subqueries` calls."""


@dataclasses.dataclass
class PoolScores:
    """A pretext's scores of the unlabeled pool.

    Attributes:
        s_s: ``[U]`` self-supervision score ``S_S`` (Eq. 1 or 2), higher = more novel.
        s_c: ``[U]`` classification score ``S_C = -KL(U || h(x))`` (Eq. 3).
        features: what a fine-tune of the pretext head alone reads instead of the images, kept
            when :meth:`Pretext.score` is asked to (``finetune_scope=head``), else ``None``:
            ``[U, 4, d]`` body features of the four rotations (rotation), ``[U, 2, c]`` pooled
            embeddings of the two views (SimCLR).
    """

    s_s: torch.Tensor
    s_c: torch.Tensor
    features: torch.Tensor | None = None


class Pretext(abc.ABC):
    """A pretext task of PAL's scoring network: how to build, train, score and fine-tune it.

    Stateless: every call gets the query's :class:`pal.strategies.QueryContext` (its ``config``
    is the experiment's) and draws from the context's seeded generators only, so a query is the
    same for its seed whatever ran before it.
    """

    name: str = ""
    tasks: tuple[str, ...] = ()
    """The tasks (``"classification"``, ``"segmentation"``) this pretext runs on."""

    @classmethod
    def check_config(cls, config: Config, query_size: int, image_hw: tuple[int, int]) -> None:
        """Raise :class:`pal.config.ConfigError` for settings this pretext cannot run with
        (called before any training). Accepts everything by default."""
        return None

    # ------------------------------------------------------------------ the scoring network
    @abc.abstractmethod
    def network(self, ctx: QueryContext) -> nn.Module:
        """A freshly initialised scoring network for ``ctx.x``'s images and ``ctx.num_classes``
        (on the host; :meth:`build` seeds the init and moves it)."""

    def build(self, ctx: QueryContext) -> nn.Module:
        """:meth:`network` under the init seeded by ``(ctx.seed, "scoring-init")``, on
        ``ctx.device`` in the images' memory format."""
        with seeded_init(ctx.seed, "scoring-init"):
            net = self.network(ctx)
        net.to(ctx.device, memory_format=ctx.normalize.memory_format)
        return net

    # ------------------------------------------------------------------ training on D_L
    @abc.abstractmethod
    def training_loss(
        self, net: nn.Module, ctx: QueryContext, generator: torch.Generator, compile: bool = False
    ) -> LossFn:
        """The multi-task loss of one batch of ``D_L`` (pretext loss + class loss), as
        ``loss(positions [B]) -> scalar`` with positions into ``ctx.labeled``.

        ``generator`` draws the augmentations (and anything else random) in call order;
        ``compile`` runs the forward pass through ``torch.compile``.
        """

    def train(self, net: nn.Module, ctx: QueryContext) -> FitReport:
        """Train ``net`` from its init on ``D_L`` (Algorithm 1, first loop): ``epochs_scoring``
        epochs of :meth:`training_loss`, batches and augmentations from
        ``ctx.generator("scoring")``, dropout masks from ``ctx.generator("scoring-dropout")``.

        With ``model_selection=best_val`` and a :meth:`validation_set`, ``net`` keeps the checked
        epoch with the lowest :meth:`validation_loss` (as the PAL authors' code does)."""
        cfg = ctx.config
        spec = FitSpec.from_config(cfg, "scoring")
        generator = ctx.generator("scoring")
        select = None
        if cfg.model_selection == "best_val" and self.validation_set(ctx).numel():
            select = Selection(lambda: self.validation_loss(net, ctx), cfg.val_checks)
        with dropout_generator(net, ctx.generator("scoring-dropout")):
            loss = self.training_loss(net, ctx, generator, spec.compile)
            n = ctx.labeled.numel()
            return fit(
                net,
                n,
                loss,
                spec,
                generator,
                progress=ctx.progress,
                phase="scoring",
                select=select,
            )

    def validation_set(self, ctx: QueryContext) -> torch.Tensor:
        """``int64 [V]`` dataset indices the scoring network is selected on: ``ctx.val`` (none
        when the experiment has no validation set)."""
        if ctx.val is None:
            return torch.empty(0, dtype=torch.int64, device=ctx.device)
        return ctx.val

    @torch.no_grad()
    def validation_loss(self, net: nn.Module, ctx: QueryContext) -> float:
        """:meth:`training_loss` on :meth:`validation_set` against the oracle's labels, without
        augmentation, in the current mode of ``net``; draws from ``ctx.generator("scoring-val")``
        afresh each call, so every epoch is measured alike."""
        val = self.validation_set(ctx)
        val_ctx = dataclasses.replace(ctx, labeled=val, augment_mode="none")
        loss = self.training_loss(net, val_ctx, ctx.generator("scoring-val"))
        positions = torch.arange(val.numel(), device=ctx.device)
        total = torch.zeros((), device=ctx.device)
        for chunk in positions.split(max(2, ctx.config.eval_batch_size // 4)):
            total += loss(chunk).float() * chunk.numel()
        return float(total) / max(positions.numel(), 1)

    def fit_metrics(self, net: nn.Module, ctx: QueryContext) -> tuple[dict[str, float], tuple]:
        """How the trained ``net`` fits: ``(metrics, fit_keys)``, the metrics logged with the
        query (``scoring/...``) and those of them that are training-set accuracies, held to
        ``fit_threshold``. None by default."""
        return {}, ()

    # ------------------------------------------------------------------ the query
    @abc.abstractmethod
    def score(self, net: nn.Module, ctx: QueryContext, keep: bool = False) -> PoolScores:
        """``S_S`` and ``S_C`` of ``ctx.unlabeled`` (eval mode, no augmentation); with ``keep``
        also the :attr:`PoolScores.features` a fine-tune of the pretext head reads."""

    @abc.abstractmethod
    def finetuner(self, net: nn.Module, scores: PoolScores, ctx: QueryContext) -> DiversityFn:
        """The sub-query fine-tune (Section 3.3): a copy of the pretext head (when
        ``scores.features`` is kept) or of the whole network, made once per query and trained
        on from call to call (``finetune_start=continue``) or made afresh from the trained
        network before each call (``restart``), pretext loss only (no labels asked), with
        ``FitSpec.finetune(config)`` and ``ctx.generator("finetune", step)``; returns
        ``diversity(picked, remaining) -> S_D`` (Eq. 4), ``S_S`` under the copy."""


class Finetuner:
    """What every pretext's sub-query fine-tune shares (Section 3.3): the copy of ``model`` (the
    pretext head, or the whole scoring network) that is fine-tuned with
    ``FitSpec.finetune(config)``, each step's draws from ``ctx.generator("finetune", step)``.
    Subclasses are the :data:`DiversityFn` of :meth:`Pretext.finetuner`; each step calls
    :meth:`next_generator` first and then trains and scores :attr:`model`.

    ``finetune_start`` decides where each step starts:

    - ``continue`` (Algorithm 1): one copy made per query and trained on from sub-query to
      sub-query;
    - ``restart`` (the authors' code): before each step a fresh copy of ``model`` (``phi``, the
      trained scoring network) is fine-tuned on everything picked so far, so step ``k`` does not
      depend on the steps before it.

    Args:
        model: what the fine-tune moves (copied; the scoring network stays as it is, and must
            not change while the query runs: ``restart`` copies it again at every step).
        features: the cached inputs of a head-only fine-tune (:attr:`PoolScores.features`), or
            ``None`` to fine-tune on the images.
    """

    def __init__(self, model: nn.Module, features: torch.Tensor | None, ctx: QueryContext):
        self.ctx, self.cfg = ctx, ctx.config
        self.features = features
        self.phi = model
        self.restart = self.cfg.finetune_start == "restart"
        self.model = copy.deepcopy(model)
        self.step = 0
        self.spec = FitSpec.finetune(self.cfg)

    def next_generator(self) -> torch.Generator:
        """Start the next fine-tune step (with ``restart``, from a fresh copy of ``phi`` in
        :attr:`model`); its generator."""
        self.step += 1
        if self.restart and self.step > 1:  # step 1 starts from the copy made in __init__
            self.model = copy.deepcopy(self.phi)
        return self.ctx.generator("finetune", self.step)


PRETEXTS: Registry[type[Pretext]] = Registry("pretext task", "strategy")


def register_pretext(name: str):
    """Class decorator: register a :class:`Pretext` subclass under ``name``."""
    return PRETEXTS.register_named(name)


def pretext_tasks() -> tuple[str, ...]:
    """Every task some registered pretext runs on, in registry order."""
    tasks = (task for name in PRETEXTS for task in PRETEXTS.get(name).tasks)
    return tuple(dict.fromkeys(tasks))


def pretext_for(task: str) -> Pretext:
    """The registered pretext whose ``tasks`` holds ``task`` (the first by name if several).

    Raises:
        ConfigError: no registered pretext runs on ``task``.
    """
    for name in PRETEXTS:
        cls = PRETEXTS.get(name)
        if task in cls.tasks:
            return cls()
    raise ConfigError(
        f"strategy: PAL has no pretext task for {task!r}; pretexts: "
        + ", ".join(f"{n} {PRETEXTS.get(n).tasks}" for n in PRETEXTS)
    )
