"""Eval-mode inference in chunks sized from the network: logits, features, reduced outputs.

:func:`predict_logits` (``[N, K]``) and :func:`predict_features` (``[N, d]``) of
``x uint8 [N, C, H, W]``, and :func:`predict_reduced` (per-image numbers from outputs too big to
keep whole, e.g. segmentation logits ``[N, K, H, W]``) run through :func:`map_chunks`, which splits
``x`` into :func:`eval_chunks`. On a CPU a chunk's size comes from the network's
:func:`forward_profile` (largest activation, MACs, weight bytes per image) and the last-level cache
(:func:`last_level_cache_bytes`), never from timing (:func:`eval_chunk`). A large streamed pool
with a Ray cluster connected is mapped on Ray Data actors instead: Ray Data only in
:mod:`pal.distributed`, imported by :func:`map_chunks` when it is used.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pal.distributed import ChunkFn
from pal.placement import Images
from pal.training.transforms import Normalizer


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
