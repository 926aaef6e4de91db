"""Training and inference on uint8 image tensors: one fitting loop for every network.

Images stay ``uint8 [N, C, H, W]`` on the device (or, for pools above the device budget, on the
host, :mod:`pal.placement`); each step gathers a batch by index (:func:`pal.placement.take`),
augments it on the device (random crop with padding, horizontal flip), normalises it and runs the
model. No DataLoader, no per-sample Python, no host synchronisation inside an epoch of a resident
pool.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import swa_utils

from pal.config import ConfigError
from pal.distributed import ChunkFn
from pal.placement import HostImages, Images, take
from pal.randaugment import rand_augment
from pal.rng import global_rng_from
from pal.segmentation import IGNORE

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, epoch, epochs)``, called after each epoch (``epoch`` counts from 1)."""


class UnderfitWarning(UserWarning):
    """A network's accuracy on its own training set is below ``fit_threshold``: what a study
    measures then is the training recipe as much as the data the strategy chose."""


def warn_underfit(name: str, value: float, threshold: float, r: int) -> bool:
    """Warn (:class:`UnderfitWarning`) and return ``True`` when ``value``, the training-set
    metric ``name`` of a network in round ``r``, is below ``threshold``; NaN passes."""
    if not value < threshold:
        return False
    warnings.warn(
        f"round {r}: {name} is {value:.3f}, below fit_threshold {threshold:g}: the network "
        "underfits its own training set (raise its epochs, lower its learning rate or dropout)",
        UnderfitWarning,
        stacklevel=2,
    )
    return True


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite (typically a learning rate set too high)."""


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how networks run: the device, the autocast dtype (``None``: fp32) and the
    memory format of images and convolutions."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @classmethod
    def from_config(cls, config, kind: str = "classification") -> Runtime:
        """Resolve ``device``, ``precision`` and ``memory_format`` for a ``kind`` task (see
        :func:`resolve_device` and :func:`resolve_speed`).

        Raises:
            ConfigError: ``device: ...`` or ``precision: ...`` for what this machine lacks.
        """
        device = resolve_device(config.device)
        return cls(device, *resolve_speed(config, device, kind))

    @property
    def precision(self) -> str:
        """``"bf16"`` or ``"fp32"``."""
        return "bf16" if self.autocast_dtype is not None else "fp32"

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the device when the precision resolved to bf16 (a no-op context
        otherwise); scores and losses are reduced in fp32 inside it."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


CPU_BF16_STRATEGIES = frozenset({"random", "entropy", "coreset", "dbal"})
"""The classification strategies whose accuracy held in bf16 on CPU: in
``ablations/mnist_precision.py`` (MNIST preset, 3 seeds) every round of every seed was within 1
point of the same seed's fp32 run (``docs/performance.md``). ``precision: auto`` turns bf16 on for
CPUs with bf16 units once it holds every classification strategy (:func:`cpu_bf16_proven`): with
some strategies in bf16 and others in fp32, a study comparing them would compare precisions too
(the same seed's round-0 model would differ). PAL and VAAL are still to be measured."""


def cpu_bf16_proven() -> bool:
    """Whether every registered classification strategy is in :data:`CPU_BF16_STRATEGIES`."""
    from pal.strategies import STRATEGIES  # here: the strategies import this module

    classification = {n for n in STRATEGIES if "classification" in STRATEGIES.get(n).tasks}
    return classification <= CPU_BF16_STRATEGIES


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: AMX-BF16 tiles (Intel Sapphire Rapids and later)
    or AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake), as oneDNN uses them."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_speed(
    config, device: torch.device, kind: str = "classification"
) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype (``None``: fp32) and the image memory format for ``device``.

    ``auto`` means bf16 autocast and channels-last on a CUDA GPU with bf16 support (Ampere and
    later), and for classification on a CPU with bf16 units (:func:`cpu_has_bf16`) once every
    strategy has been shown to hold its accuracy in bf16 (:func:`cpu_bf16_proven`); fp32 and
    contiguous elsewhere (on CPUs without those units both cost more than they save).

    Raises:
        ConfigError: ``precision: ...`` for bf16 on a GPU without bf16 support.
    """
    gpu = device.type == "cuda"
    bf16_ok = not gpu or torch.cuda.is_bf16_supported()
    if config.precision == "bf16" and not bf16_ok:
        raise ConfigError("precision: this GPU has no bf16 support; use fp32 or auto")
    cpu_units = not gpu and cpu_has_bf16()
    proven = kind == "classification" and cpu_bf16_proven()
    use_bf16 = config.precision == "bf16" or (
        config.precision == "auto" and ((gpu and bf16_ok) or (cpu_units and proven))
    )
    channels_last = config.memory_format == "channels_last" or (
        config.memory_format == "auto" and (gpu or (cpu_units and use_bf16))
    )
    return (
        torch.bfloat16 if use_bf16 else None,
        torch.channels_last if channels_last else torch.contiguous_format,
    )


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


class Normalizer:
    """``uint8 [B, C, H, W] -> float [B, C, H, W]``, standardised by the training set's channel
    statistics, in ``memory_format`` (``torch.channels_last`` feeds convolutions in NHWC)."""

    def __init__(
        self,
        x_train: Images,
        memory_format=torch.contiguous_format,
        rows: Any = None,
    ):
        """Statistics of ``x_train`` (``uint8 [N, C, H, W]``), or of its ``rows`` (``int64
        [P]``, e.g. the pool), gathered a chunk at a time: a pool larger than memory (a
        memory-mapped decode cache) is never copied whole."""
        if rows is not None:
            x_train = HostImages(x_train, x_train.device)[rows]
        # channel sums in float64 over chunks of 256: no float copy of the whole set
        # (Cityscapes' is gigabytes)
        total = torch.zeros(x_train.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in x_train.split(256):
            c = chunk.double().div_(255.0)
            total += c.sum(dim=(0, 2, 3))
            squares += c.square().sum(dim=(0, 2, 3))
        n = x_train.numel() // x_train.shape[1]
        mean = total / n
        var = (squares - n * mean.square()) / max(n - 1, 1)
        self.mean = mean.float().view(1, -1, 1, 1)
        self.std = var.clamp_min(0).sqrt().float().clamp_min(1e-3).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def to(self, device: torch.device) -> Normalizer:
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.float() / 255.0 - self.mean) / self.std
        return out.contiguous(memory_format=self.memory_format)


def augment(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (``H // 8`` px) and, for ``crop_flip``, a horizontal flip.

    Args:
        x: ``[B, C, H, W]`` (any dtype), on the generator's device.
        mode: ``none``, ``crop`` or ``crop_flip``.

    Returns:
        ``[B, C, H, W]``, the same dtype; one random offset (and flip) per image.
    """
    if mode == "none":
        return x
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [B, C, H, W]
    if mode == "crop_flip":
        flip = torch.rand(b, generator=generator, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


def augment_with_masks(
    x: torch.Tensor, masks: torch.Tensor, mode: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment` of images ``uint8 [B, C, H, W]`` and their masks ``uint8 [B, H, W]`` with
    the same crop and flip per image; the padding is the ignore label 255 in the masks.

    The mask rides along as one more channel, shifted by +1 (mod 256): the ignore label 255 and
    the zero padding both come back as 255, every class id as itself.
    """
    joint = torch.cat([x, (masks + 1)[:, None]], dim=1)  # uint8 wraps 255 -> 0
    out = augment(joint, mode, generator)
    return out[:, :-1].contiguous(), out[:, -1] - 1  # 0 (padding or ignore) -> 255


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of positions ``[0, n)`` in batches, on the generator's device.

    A trailing batch of one is folded into the previous one (BatchNorm cannot train on a single
    sample with a 1x1 map).
    """
    order = torch.randperm(n, generator=generator, device=generator.device)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


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


def clear_cast_cache() -> None:
    """Drop autocast's low-precision copies of the weights after an optimizer step.

    Inside one ``torch.autocast`` region the bf16 copy of a parameter is made once and reused;
    without this, every step after the first would run the forward pass on the weights as they
    were at the first step.
    """
    torch.clear_autocast_cache()


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


def predict_logits(
    model: nn.Module, x: torch.Tensor, normalize: Normalizer, batch_size: int
) -> torch.Tensor:
    """Eval-mode logits ``[N, K]`` of ``x uint8 [N, C, H, W]``, in batches, no augmentation."""
    return _in_batches(_logits, model, x, normalize, batch_size)


def predict_features(
    model: nn.Module, x: torch.Tensor, normalize: Normalizer, batch_size: int
) -> torch.Tensor:
    """Eval-mode penultimate features ``[N, d]`` (``model.features``) of ``x uint8 [N, C, H, W]``,
    in batches, no augmentation."""
    return _in_batches(_features, model, x, normalize, batch_size)


CACHE_SHARE = 0.5
"""Share of the last-level cache one chunk's largest activation may fill (:func:`eval_chunk`)."""

FALLBACK_CACHE_BYTES = 32 * 2**20
"""Last-level cache assumed where the machine does not tell (:func:`last_level_cache_bytes`)."""

WEIGHT_MACS_PER_BYTE = {4: 3.0, 2: 18.0}
"""What one chunk's pass over the weights costs, in multiply-accumulates per weight byte (fp32
storage), by bytes per activation element: fp32 (4) streams the weights once; bf16 autocast (2)
also casts and reorders them every chunk, which cost about as much as 18 MACs per byte on one
core here (VGG-16-BN with its 537 MB classifier: ~190 ms a chunk at 3x96x96)."""

WEIGHT_SHARE = 0.1
"""Largest share of a chunk's time its pass over the weights should take (:func:`eval_chunk`)."""


@dataclasses.dataclass(frozen=True)
class ForwardProfile:
    """What one image costs a network's eval-mode forward pass: ``activation`` elements of the
    largest tensor a module reads or writes, ``macs`` multiply-accumulates of its convolutions
    and linear layers, and ``weights`` bytes of the parameters of the modules that ran."""

    activation: int
    macs: int
    weights: int


_PROFILES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], ForwardProfile]] = (
    weakref.WeakKeyDictionary()
)


def forward_profile(model: nn.Module, sample_shape: tuple[int, ...]) -> ForwardProfile:
    """The :class:`ForwardProfile` of ``model`` on one zero image ``[1, *sample_shape]`` (CPU),
    from hooks on every module; made once per module and shape (cached), counted in elements and
    MACs, not timed, so the same network and shape always give the same profile. The probe runs
    in eval mode without gradients and leaves the modules' modes and the global RNG as found."""
    cached = _PROFILES.setdefault(model, {})
    if sample_shape in cached:
        return cached[sample_shape]
    largest, macs, ran = 0, 0, {}

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal largest, macs
        outs = output if isinstance(output, (tuple, list)) else (output,)
        sizes = [t.numel() for t in (*inputs, *outs) if isinstance(t, torch.Tensor)]
        largest = max(largest, *sizes, 0)
        if isinstance(module, nn.modules.conv._ConvNd):  # per output element (input, transposed)
            fan = module.out_channels if module.transposed else module.in_channels
            per = fan // module.groups * math.prod(module.kernel_size)
            macs += (inputs[0] if module.transposed else output).numel() * per
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        ran[id(module)] = module

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            model.eval()
            model(torch.zeros(1, *sample_shape))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    params = {id(p): p for m in ran.values() for p in m.parameters(recurse=False)}
    weights = sum(p.numel() * p.element_size() for p in params.values())
    cached[sample_shape] = ForwardProfile(largest, macs, weights)
    return cached[sample_shape]


@functools.cache
def last_level_cache_bytes() -> int:
    """Size of the largest data cache CPU 0 sees (sysfs, else ``sysconf``), else
    :data:`FALLBACK_CACHE_BYTES`."""
    found: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
            found[int((index / "level").read_text())] = int(size.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
    if found:
        return found[max(found)]
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if size > 0:
            return size
    return FALLBACK_CACHE_BYTES


def eval_chunk(model: nn.Module, x: torch.Tensor, batch_size: int, passes: int = 1) -> int:
    """Samples of ``x [N, C, H, W]`` per inference chunk of ``model``, which runs ``passes``
    forward images per sample (4 for the rotations, 3 for SimCLR's views) on images shaped like
    ``x``'s.

    On a GPU (any device but the CPU), ``batch_size`` forward images per chunk. On a CPU, the
    power of two nearest (in log scale) to the larger of

    - ``CACHE_SHARE * last-level cache / (largest activation per image in bytes)``: the chunk's
      activations stay in the cache (on one core the small ``cnn`` at 1x28x28 ran 2.1x slower
      in chunks of 1024 forward images than of 128, ``vgg16_tv`` at 3x32x32 1.45x slower than
      in 64, ``segcnn`` 1.3x slower in 512 than in 64);
    - ``WEIGHT_MACS_PER_BYTE * weight bytes / (WEIGHT_SHARE * MACs per image)``: the chunk's
      pass over the weights takes at most ~10% of its time (under bf16 autocast ``vgg16_tv``'s
      537 MB of weights are recast every chunk: at 3x96x96 it ran 1.2x faster in chunks of 32
      than in the 16 the cache alone allows, at 3x32x32 4.7x faster in 256 than in 16),

    from the network's :func:`forward_profile` (activation bytes at the autocast dtype when
    autocast is on), clamped to ``[passes, batch_size]`` forward images. The chunk depends on
    the network, the input shape, the precision and the cache size, never on timing: the same
    config gives the same chunks, hence the same numbers, in every process on a machine.
    """
    images = batch_size
    if x.device.type == "cpu":
        profile = forward_profile(model, tuple(x.shape[1:]))
        if torch.is_autocast_enabled("cpu"):
            itemsize = torch.get_autocast_dtype("cpu").itemsize
        else:
            itemsize = (x.dtype if x.is_floating_point() else torch.get_default_dtype()).itemsize
        fits = CACHE_SHARE * last_level_cache_bytes() / max(1, profile.activation * itemsize)
        rate = WEIGHT_MACS_PER_BYTE.get(itemsize, WEIGHT_MACS_PER_BYTE[2])
        amortized = rate * profile.weights / (WEIGHT_SHARE * max(1, profile.macs))
        images = min(max(2 ** round(math.log2(max(fits, amortized, 1.0))), passes), batch_size)
    return max(1, images // passes)


def eval_chunks(
    model: nn.Module, x: Images, batch_size: int, passes: int = 1
) -> Iterable[torch.Tensor]:
    """``x [N, ...]`` split into chunks of :func:`eval_chunk` samples for inference of
    ``model`` (``passes`` forward images per sample), each on ``x``'s device (gathered from the
    host one at a time when ``x`` is streamed)."""
    return x.split(eval_chunk(model, x, batch_size, passes))


def map_chunks(
    fn: ChunkFn,
    model: nn.Module,
    x: Images,
    normalize: Normalizer,
    batch_size: int,
    passes: int = 1,
) -> tuple[torch.Tensor, ...]:
    """``fn(model, normalize(chunk))`` over the :func:`eval_chunks` of ``x``, each output
    concatenated over the chunks (``()`` for an empty ``x``); ``model`` in the caller's mode.

    A streamed pool of at least ``distributed_min_pool`` images with a Ray cluster connected
    runs on Ray Data actors (:func:`pal.distributed.ray_map_chunks`): the same chunks through
    the same ``fn``, hence the same numbers.
    """
    if not len(x):
        return ()
    dist = getattr(x, "distributed", None)
    if dist is not None and len(x) >= dist.min_pool:
        from pal.distributed import ray_connected, ray_map_chunks

        if ray_connected():
            chunk = eval_chunk(model, x, batch_size, passes)
            outs = ray_map_chunks(fn, model, x, normalize, chunk, x.device)
            if outs is not None:
                return outs
    # outputs written into tensors allocated once: per-chunk outputs kept until a final cat sit
    # between the chunks' freed activations and fragment the heap (a 50k pool's scoring pass
    # held 4 GB more at its end)
    outs: tuple[torch.Tensor, ...] = ()
    start = 0
    for chunk in eval_chunks(model, x, batch_size, passes):
        parts = fn(model, normalize(chunk))
        if not outs:
            outs = tuple(p.new_empty((len(x), *p.shape[1:])) for p in parts)
        for out, part in zip(outs, parts, strict=True):
            out[start : start + len(part)] = part
        start += len(chunk)
    return outs


@torch.inference_mode()
def predict_reduced(
    model: nn.Module,
    x: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``reduce(model(chunk))`` for eval-mode chunks of ``x uint8 [N, C, H, W]``, concatenated:
    per-image numbers ``[N, ...]`` from outputs too big to keep whole (a segmentation network's
    logits ``[N, K, H, W]``)."""
    model.eval()
    outs = [reduce(model(normalize(chunk)).float()) for chunk in eval_chunks(model, x, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def _logits(model: nn.Module, chunk: torch.Tensor) -> tuple[torch.Tensor]:
    return (model(chunk).float(),)  # fp32 out of autocast


def _features(model: nn.Module, chunk: torch.Tensor) -> tuple[torch.Tensor]:
    return (model.features(chunk).float(),)


@torch.inference_mode()
def _in_batches(fn: ChunkFn, model: nn.Module, x, normalize: Normalizer, bs: int) -> torch.Tensor:
    model.eval()
    outs = map_chunks(fn, model, x, normalize, bs)
    return outs[0] if outs else torch.empty(0)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``argmax logits [N, K]`` equal to ``y [N]``; NaN for an empty set."""
    if len(y) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == y).float().mean())
