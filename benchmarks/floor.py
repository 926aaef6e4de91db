"""The floor of each phase of a round: a bare PyTorch loop doing the phase's network arithmetic on
the same tensors, and nothing else.

A floor trains or runs a copy of the network pal used in the phase (same architecture, device,
memory format and precision), on the images already normalised, placed and (for rotation
prediction) rotated before the clock starts: per step one gather of the batch, the forward
pass, the loss, ``zero_grad``, ``backward`` and the optimizer's step (SGD or Adam with pal's
hyperparameters, fused where pal's is, :meth:`pal.training.FitSpec.make_optimizer`), bf16
autocast entered per step when the round runs in bf16. The same epochs, batch size and number
of steps as pal's phase; no data loader, no augmentation, no validation checks, no fit checks,
no learning-rate schedule, no host syncs. ``pal s / floor s`` is what pal's own work costs on top;
:data:`TARGET` is the floor share every training phase is held to.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pal import scoring
from pal.training import FitSpec, Runtime, batches, eval_chunk

TARGET = 0.9
"""A training phase should run at >= 90% of its floor's speed (floor seconds / pal seconds)."""


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so a clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epochs(n: int, batch_size: int, epochs: int, device: torch.device) -> list[torch.Tensor]:
    """Every epoch's batches of positions (:func:`pal.training.batches`, as pal draws them),
    drawn before the clock starts."""
    generator = torch.Generator(device).manual_seed(0)
    return [b for _ in range(epochs) for b in batches(n, batch_size, generator)]


def train_floor(
    model: nn.Module,
    n: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    spec: FitSpec,
    runtime: Runtime,
    params=None,
) -> float:
    """Seconds of ``spec.epochs`` passes of ``batch_loss(positions [B]) -> scalar`` over ``n``
    samples in batches of ``spec.batch_size``, training ``params`` (default: all of
    ``model``'s) with ``spec``'s optimizer."""
    device = runtime.device
    steps = _epochs(n, spec.batch_size, spec.epochs, device)
    model.train()
    optimizer = spec.make_optimizer(params if params is not None else model.parameters())
    sync(device)
    start = time.perf_counter()
    for positions in steps:
        with runtime.autocast():
            loss = batch_loss(positions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if torch.is_autocast_enabled(device.type):  # inside an outer autocast: recast weights
            torch.clear_autocast_cache()
    sync(device)
    return time.perf_counter() - start


def classifier_floor(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: FitSpec, runtime: Runtime
) -> float:
    """The task network's training: cross-entropy of ``model`` (a copy is trained) on
    normalised images ``x float [N, C, H, W]`` and labels ``y int64 [N]`` (or masks
    ``[N, H, W]``, 255 ignored)."""
    net = copy.deepcopy(model)
    return train_floor(
        net,
        len(x),
        lambda pos: F.cross_entropy(net(x[pos]).float(), y[pos].long(), ignore_index=255),
        spec,
        runtime,
    )


def rotation_floor(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    spec: FitSpec,
    runtime: Runtime,
    params: Callable[[nn.Module], object] | None = None,
) -> float:
    """The scoring network's training (rotation CE on the four rotations of each image plus,
    with labels ``y int64 [N]``, class CE on the upright one), the four rotations of the
    normalised images ``x float [N, C, H, W]`` made once, before the clock: ``[N, 4, C, H, W]``.
    ``params(net)``: what trains (default: everything)."""
    net = copy.deepcopy(model)
    rotated = scoring.rotations(x).view(len(x), 4, *x.shape[1:]).contiguous()
    labels4 = torch.arange(4, device=x.device)

    def loss(pos: torch.Tensor) -> torch.Tensor:
        b = pos.numel()
        images = rotated[pos].flatten(0, 1)
        if x.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        rot_logits, class_logits = net(images)
        out = F.cross_entropy(rot_logits.float(), labels4.repeat(b))
        if y is not None:
            out = out + F.cross_entropy(class_logits.view(b, 4, -1)[:, 0].float(), y[pos])
        return out

    return train_floor(net, len(x), loss, spec, runtime, params(net) if params else None)


def head_floor(head: nn.Module, features: torch.Tensor, spec: FitSpec, runtime: Runtime) -> float:
    """A fine-tune of a linear rotation ``head`` (a copy is trained) on cached body features
    ``[P, 4, d]``: rotation CE on all four rotations of each image."""
    net = copy.deepcopy(head)
    labels4 = torch.arange(4, device=features.device)

    def loss(pos: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            net(features[pos].flatten(0, 1)).float(), labels4.repeat(pos.numel())
        )

    return train_floor(net, len(features), loss, spec, runtime)


@torch.inference_mode()
def forward_floor(model: nn.Module, x: torch.Tensor, batch_size: int, runtime: Runtime) -> float:
    """Eval-mode forward passes of ``model`` over normalised images ``x float [N, C, H, W]`` in
    pal's inference chunks (:func:`pal.training.eval_chunk`), each reduced to its argmax."""
    model.eval()
    chunk = eval_chunk(model, x, batch_size)
    sync(runtime.device)
    start = time.perf_counter()
    with runtime.autocast():
        for part in x.split(chunk):
            model(part).argmax(1)
    sync(runtime.device)
    return time.perf_counter() - start


@torch.inference_mode()
def head_forward_floor(head: nn.Module, features: torch.Tensor, runtime: Runtime) -> float:
    """A re-score's network work on cached features ``[R, 4, d]``: the head and a softmax."""
    sync(runtime.device)
    start = time.perf_counter()
    with runtime.autocast():
        torch.softmax(head(features.flatten(0, 1)).float(), 1)
    sync(runtime.device)
    return time.perf_counter() - start


def share(floor_seconds: float, pal_seconds: float) -> float:
    """The floor's share of pal's time: 1.0 means pal adds nothing to the network's work."""
    return floor_seconds / pal_seconds if pal_seconds > 0 else math.nan
