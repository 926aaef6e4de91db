"""The one fitting loop for every network, and the classification/segmentation losses.

:func:`fit` trains any module for ``FitSpec.epochs`` shuffled passes through a
``loss_fn(positions [B]) -> scalar`` (optional checkpoint :class:`Selection`, SWA), and reports a
:class:`FitReport`; :class:`FitSpec` holds the optimizer, schedule, epochs and batch size (and
PAL's sub-query fine-tune, Section 3.3). :func:`train_classifier` (cross-entropy on
``x uint8 [N, C, H, W]``, ``y int64 [N]``) and :func:`train_segmenter` (:func:`pixel_cross_entropy`
of logits ``[B, K, H, W]`` on masks ``uint8 [B, H, W]``) build their batches by index
(:func:`pal.placement.take`), augment them on the device (:mod:`pal.training.transforms`) and fit.
Also :func:`accuracy`, and the warnings and errors of training (:class:`UnderfitWarning`,
:class:`TrainingDivergedError`): :func:`warn_underfit` says in one line which network underfits
and which ``--set`` keys would help (:func:`fit_advice`), and :func:`console_warnings` prints
pal's warnings as ``warning: <message>`` lines, for the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TextIO

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import swa_utils

from pal.placement import take
from pal.randaugment import rand_augment
from pal.rng import global_rng_from
from pal.segmentation import IGNORE
from pal.training.runtime import clear_cast_cache
from pal.training.transforms import Normalizer, augment, augment_with_masks, batches

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, epoch, epochs)``, called after each epoch (``epoch`` counts from 1)."""


class UnderfitWarning(UserWarning):
    """A network's accuracy on its own training set is below ``fit_threshold``: what a study
    measures then is the training recipe as much as the data the strategy chose."""


NETWORKS = {
    "train_accuracy": "the task network",
    "scoring/rotation_train_accuracy": "the scoring network's rotation head",
    "scoring/class_train_accuracy": "the scoring network's class head",
}
"""The network each training-set metric held to ``fit_threshold`` measures (the console's
words; a metric not named here is named as it is)."""


def fit_advice(name: str, config=None) -> list[str]:
    """The ``KEY=VALUE`` settings that would help the network of training-set metric ``name``
    fit, with values from ``config`` (a :class:`pal.config.Config`; ``None``: the defaults):
    more epochs (the task network's ``epochs_task_max``: retrain with doubled epochs until it
    fits; the scoring network's ``epochs_scoring``), smaller batches (with few labels a batch of
    64 is one or two steps an epoch) and ``model_selection=last`` (``best_val`` keeps the epoch
    with the best validation figure, which with few labels comes before the network fits them).
    On 100 CIFAR-10 labels these three took the task network from 0.58 to 1.0 once ``augment``
    was ``none`` (see :mod:`pal.labeling.presets`)."""
    if config is None:
        from pal.config import Config

        config = Config()
    if name == "train_accuracy":
        top = config.epochs_task_max
        off = top is None or top <= config.epochs_task
        more = [f"epochs_task_max={8 * config.epochs_task if off else 2 * top}"]
    elif name.startswith("scoring/"):
        more = [f"epochs_scoring={2 * config.epochs_scoring}"]
    else:
        return []
    if config.batch_size > 16:
        more.append(f"batch_size={max(8, config.batch_size // 4)}")
    if config.model_selection == "best_val":
        more.append("model_selection=last")
    return more


def underfit_message(
    name: str, value: float, threshold: float, r: int, config=None, preset: str | None = None
) -> str:
    """One line: in round ``r`` the network of metric ``name`` fits its training set at
    ``value`` (below ``threshold``), and the ``--set`` keys (:func:`fit_advice`) or the
    ``preset`` (a labeling project's, :mod:`pal.labeling.presets`) that would help."""
    network = NETWORKS.get(name, name)
    tries = [f"--set {kv}" for kv in fit_advice(name, config)]
    if preset:
        tries.append(f"the preset {preset} (pal label init --preset {preset})")
    text = (
        f"round {r}: {network} fits its training set at {value:.3f} ({name} < fit_threshold "
        f"{threshold:g})"
    )
    if tries:
        text += ": try " + (", ".join(tries[:-1]) + " or " if len(tries) > 1 else "") + tries[-1]
    return text


def warn_underfit(
    name: str, value: float, threshold: float, r: int, config=None, preset: str | None = None
) -> bool:
    """Warn (:class:`UnderfitWarning`, :func:`underfit_message`) and return ``True`` when
    ``value``, the training-set metric ``name`` of a network in round ``r``, is below
    ``threshold``; NaN passes. ``config`` sets the advice's values, ``preset`` names a preset
    that would help."""
    if not value < threshold:
        return False
    warnings.warn(
        underfit_message(name, value, threshold, r, config, preset), UnderfitWarning, stacklevel=2
    )
    return True


def _from_pal(category: type[Warning], filename: str) -> bool:
    """Whether a warning is pal's: a category pal defines, or raised from pal's source."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the pal package
    inside = os.path.abspath(filename or "").startswith(here + os.sep)
    return getattr(category, "__module__", "").split(".")[0] == "pal" or inside


@contextlib.contextmanager
def console_warnings(stream: TextIO | None = None) -> Iterator[None]:
    """Within it, pal's warnings (:class:`UnderfitWarning`, the other categories pal defines and
    every warning raised from pal's source) print as one line ``warning: <message>`` on
    ``stream`` (default: ``sys.stderr`` as it is then), with no source line; other warnings
    print as Python prints them. The warning filters are not touched."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not _from_pal(category, filename):
            return original(message, category, filename, lineno, file, line)
        out = file or stream or sys.stderr
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed stream
            # on a terminal, over the progress line (pal.progress.RoundDisplay redraws it)
            clear = "\r\x1b[K" if getattr(out, "isatty", lambda: False)() else ""
            out.write(clear + "warning: " + " ".join(str(message).split()) + "\n")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite (typically a learning rate set too high)."""


@dataclasses.dataclass(frozen=True)
class FitSpec:
    """How to fit one network: optimizer, learning-rate schedule, epochs, batch size, and
    stochastic weight averaging from epoch ``ceil(swa_start * epochs)`` at a constant
    ``swa_lr_factor * lr`` (``swa``; the schedule runs over the epochs before it)."""

    epochs: int
    lr: float
    batch_size: int
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    compile: bool = False
    swa: bool = False
    swa_start: float = 0.75
    swa_lr_factor: float = 0.5

    def forward(self, module: nn.Module) -> nn.Module:
        """The module to train through: ``torch.compile(module)`` when ``compile`` is set (same
        parameters), else ``module`` itself."""
        return torch.compile(module) if self.compile else module

    @classmethod
    def from_config(cls, config, network: str) -> FitSpec:
        """The spec of the ``task`` or ``scoring`` network: ``epochs_<network>``, ``lr_<network>``
        and the shared optimizer settings; ``swa`` for the task network only."""
        return cls(
            epochs=getattr(config, f"epochs_{network}"),
            lr=getattr(config, f"lr_{network}"),
            batch_size=config.batch_size,
            optimizer=config.optimizer,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            schedule=config.lr_schedule,
            compile=config.compile,
            swa=config.swa and network == "task",
            swa_start=config.swa_start,
        )

    @classmethod
    def finetune(cls, config) -> FitSpec:
        """PAL's sub-query fine-tune (Section 3.3): plain SGD at ``finetune_lr_factor *
        lr_scoring`` for ``finetune_epochs`` epochs, constant rate, no weight decay."""
        return cls(
            epochs=config.finetune_epochs,
            lr=config.finetune_lr_factor * config.lr_scoring,
            batch_size=config.batch_size,
            optimizer="sgd",
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
        )

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """SGD or Adam over ``params``, fused (one kernel over all of them per step) when they
        are float tensors on a CPU or a CUDA GPU: on one CPU core, plain SGD's step over VGG-16's
        134M parameters took 0.71 s against 0.09 s fused, a sixth of the training step's time."""
        params = list(params)
        fused = bool(params) and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
        )
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                fused=fused or None,
            )
        if self.optimizer == "adam":
            return torch.optim.Adam(
                params, lr=self.lr, weight_decay=self.weight_decay, fused=fused or None
            )
        raise ValueError(f"optimizer: must be one of ['sgd', 'adam'], got {self.optimizer!r}")


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which epoch's weights :func:`fit` returns: the lowest ``check()`` among ``checks``
    evaluations spread evenly over the epochs (the last epoch always among them).

    ``check() -> float`` runs with the module in eval mode and gradients off; lower is better
    (a validation loss, or a validation accuracy negated). Ties go to the later epoch.
    """

    check: Callable[[], float]
    checks: int = 10

    def epochs(self, epochs: int) -> set[int]:
        """The epochs (counted from 1) after which ``check`` runs."""
        n = max(1, min(self.checks, epochs))
        return {max(1, round(i * epochs / n)) for i in range(1, n + 1)} | {epochs}


@dataclasses.dataclass(frozen=True)
class FitReport:
    """What :func:`fit` did: the epochs run, the epoch whose weights it returned (``0``: the
    averaged weights of SWA), that epoch's ``check()`` value (NaN without a selection) and the
    mean training loss of the last epoch."""

    epochs: int
    chosen_epoch: int
    chosen_value: float
    last_loss: float


def fit(
    module: nn.Module,
    n: int,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    spec: FitSpec,
    generator: torch.Generator,
    params=None,
    progress: ProgressFn | None = None,
    phase: str = "train",
    select: Selection | None = None,
) -> FitReport:
    """The one training loop: ``spec.epochs`` shuffled passes over ``n`` samples.

    ``loss_fn(positions [B]) -> scalar`` builds the batch and the loss, so the same loop trains
    the task network, the scoring network and the fine-tuned pretext head.

    With ``select``, the module ends with the weights of the checked epoch with the lowest
    ``select.check()`` (checkpoint selection on validation, as the PAL authors' code does);
    without, with the last epoch's. With ``spec.swa`` the last ``1 - spec.swa_start`` of the
    epochs average the weights (Izmailov et al. 2018, ``torch.optim.swa_utils``), BatchNorm's
    statistics are recomputed for the average with one pass of ``loss_fn``'s batches, and the
    average is one more candidate of the selection (the result, without one).

    Randomness comes from ``generator`` (batches, augmentations) and from the seeded generators
    of the module's :class:`pal.models.SeededDropout` layers; a layer that draws from the global
    RNG instead sees it seeded from ``generator`` for the fit (:func:`pal.rng.global_rng_from`).
    """
    if n == 0:
        return FitReport(0, 0, math.nan, math.nan)
    with global_rng_from(generator):
        return _fit(module, n, loss_fn, spec, generator, params, progress, phase, select)


def _fit(module, n, loss_fn, spec, generator, params, progress, phase, select) -> FitReport:
    module.train()
    optimizer = spec.make_optimizer(params if params is not None else module.parameters())
    swa_epoch = max(1, math.ceil(spec.swa_start * spec.epochs)) if spec.swa else spec.epochs + 1
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=min(spec.epochs, swa_epoch))
        if spec.schedule == "cosine"
        else None
    )
    averaged = swa_scheduler = None
    check_at = select.epochs(spec.epochs) if select is not None else set()
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    autocast = torch.is_autocast_enabled(generator.device.type)
    for epoch in range(1, spec.epochs + 1):
        total, steps = torch.zeros((), device=generator.device), 0
        for positions in batches(n, spec.batch_size, generator):
            loss = loss_fn(positions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if autocast:
                clear_cast_cache()
            total += loss.detach()
            steps += 1
        if not torch.isfinite(total):  # one host sync per epoch, not per step
            raise TrainingDivergedError(
                f"{phase} training diverged: the loss became {float(total)} in epoch {epoch} "
                f"(optimizer {spec.optimizer}, lr {spec.lr}); lower the learning rate"
            )
        if epoch >= swa_epoch:
            if averaged is None:  # made here: a scheduler sets the rate when it is built
                averaged = swa_utils.AveragedModel(module, use_buffers=False)
                swa_scheduler = swa_utils.SWALR(
                    optimizer, swa_lr=spec.swa_lr_factor * spec.lr, anneal_epochs=1
                )
            averaged.update_parameters(module)
            swa_scheduler.step()
        elif scheduler is not None:
            scheduler.step()
        if epoch in check_at:
            value = _check(module, select)
            if best is None or value <= best[0]:
                best = (value, epoch, _snapshot(module))
        if progress is not None:
            progress(phase, epoch, spec.epochs)
    last_loss = float(total) / max(steps, 1)
    report = FitReport(spec.epochs, spec.epochs, math.nan, last_loss)
    if averaged is not None:
        _load_average(module, averaged, n, loss_fn, spec.batch_size, generator)
        if select is None:
            return dataclasses.replace(report, chosen_epoch=0)
        value = _check(module, select)
        if value <= best[0]:
            return dataclasses.replace(report, chosen_epoch=0, chosen_value=value)
    if best is not None:
        module.load_state_dict(best[2])
        return dataclasses.replace(report, chosen_epoch=best[1], chosen_value=best[0])
    return report


def _check(module: nn.Module, select: Selection) -> float:
    module.eval()
    with torch.no_grad():
        value = float(select.check())
    module.train()
    return value


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def _load_average(module, averaged, n, loss_fn, batch_size, generator) -> None:
    """Copy SWA's averaged weights into ``module`` and recompute its BatchNorm statistics as a
    plain average over one epoch of ``loss_fn``'s (augmented) training batches."""
    for p, avg in zip(module.parameters(), averaged.module.parameters(), strict=True):
        p.copy_(avg)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    module.train()
    for positions in batches(n, batch_size, generator):
        loss_fn(positions)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    normalize: Normalizer,
    spec: FitSpec,
    augment_mode: str,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
    select: Selection | None = None,
    randaugment: tuple[int, float] = (0, 0.0),
) -> FitReport:
    """Cross-entropy training of ``model`` on ``x uint8 [N, C, H, W]``, ``y int64 [N]``; each
    batch cropped/flipped by ``augment_mode`` and then, with ``randaugment = (ops, magnitude)``
    and ``ops > 0``, through :func:`pal.randaugment.rand_augment`."""

    forward = spec.forward(model)
    ops, magnitude = randaugment

    def loss_fn(pos: torch.Tensor) -> torch.Tensor:
        images = augment(take(x, pos), augment_mode, generator)
        if ops:
            images = rand_augment(images, ops, magnitude, generator)
        return F.cross_entropy(forward(normalize(images)), y[pos])

    return fit(
        model, len(x), loss_fn, spec, generator, progress=progress, phase="task", select=select
    )


def train_segmenter(
    model: nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor,
    normalize: Normalizer,
    spec: FitSpec,
    augment_mode: str,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
    select: Selection | None = None,
) -> FitReport:
    """Pixel-wise cross-entropy training of a segmentation ``model`` (logits ``[B, K, H, W]``) on
    ``x uint8 [N, C, H, W]`` and ``masks uint8 [N, H, W]``; the ignore label 255 adds no loss."""

    forward = spec.forward(model)

    def loss_fn(pos: torch.Tensor) -> torch.Tensor:
        images, targets = augment_with_masks(take(x, pos), masks[pos], augment_mode, generator)
        return pixel_cross_entropy(forward(normalize(images)), targets)

    return fit(
        model, len(x), loss_fn, spec, generator, progress=progress, phase="task", select=select
    )


def pixel_cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, K, H, W]`` over the annotated pixels of ``masks
    uint8 [B, H, W]`` (255 = ignore); 0 when no pixel is annotated."""
    targets = masks.long()
    loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return loss / (targets != IGNORE).sum().clamp_min(1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``argmax logits [N, K]`` equal to ``y [N]``; NaN for an empty set."""
    if len(y) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == y).float().mean())
