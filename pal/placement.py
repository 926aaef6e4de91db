"""Where the pool's images live: resident on the device, or in host memory and streamed.

Below the device budget (``device_budget_gb``; default: a quarter of a GPU's memory, half of the
host's on a CPU) the training and test images are moved to the device once, as uint8 tensors,
and every batch is gathered there by index. Above it they stay on the host as a
:class:`HostImages`: indexing it gives a lazy view, and only a batch at a time is gathered on the
host (from memory, or paged in from disk when the images are a decode cache's memory map,
:mod:`pal.data.cache`) and copied to the device (pinned memory, the next chunk gathered while the
device runs the current one). Every consumer reads images through :func:`take` (one batch) or
``x.split(n)`` (inference chunks), so the two placements give the same batches, hence the same
numbers for the same seed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

GIB = 1024**3
GPU_SHARE = 0.25
"""Default budget on a GPU: a quarter of its memory (the networks, their activations and other
trials packed on the same GPU need the rest)."""
HOST_SHARE = 0.5
"""Default budget on a CPU: half of the host's physical memory."""


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Ray Data scoring of a host pool (see :mod:`pal.distributed`): pools of at least
    ``min_pool`` images are scored by ``workers`` actors (``None``: what the cluster has free)."""

    min_pool: int
    workers: int | None = None


class HostImages:
    """``uint8 [N, C, H, W]`` images in host memory, gathered to ``device`` a batch at a time.

    Indexing (by positions, a boolean mask or a slice) returns a view, never a copy;
    :meth:`gather` and :meth:`split` materialise batches on ``device``.

    Args:
        source: ``uint8 [M, C, H, W]`` on the host (any tensor the host can index, a memory map
            included).
        device: where batches go.
        index: ``int64 [N]`` rows of ``source`` this view holds (``None``: all of them).
        distributed: Ray Data scoring of this pool, when a cluster is connected.
    """

    def __init__(
        self,
        source: torch.Tensor,
        device: torch.device | str,
        index: torch.Tensor | None = None,
        distributed: Distributed | None = None,
    ):
        self.source = source
        self.device = torch.device(device)
        self.index = index
        self.distributed = distributed

    # ------------------------------------------------------------------ tensor-like
    @property
    def shape(self) -> torch.Size:
        n = len(self.source) if self.index is None else len(self.index)
        return torch.Size((n, *self.source.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.source.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def dim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return self.source.is_floating_point()

    def __repr__(self) -> str:
        return f"HostImages({tuple(self.shape)}, device={self.device})"

    def __getitem__(self, key: Any) -> HostImages:
        """The view of ``key``'s rows (positions ``int [K]``, a mask ``bool [N]`` or a slice)."""
        rows = self._rows(key)
        if isinstance(rows, slice):
            rows = torch.arange(len(self.source))[rows]
        return HostImages(self.source, self.device, rows, self.distributed)

    # ------------------------------------------------------------------ batches
    def host(self, key: Any = None) -> torch.Tensor:
        """The rows of ``key`` (all when ``None``) as a host tensor ``uint8 [K, C, H, W]`` (a
        view of the source for a slice of an unindexed pool, else a gathered copy)."""
        rows = self._rows(key) if key is not None else self.index
        if rows is None:
            return self.source
        return self.source[rows]

    def gather(self, key: Any = None) -> torch.Tensor:
        """The rows of ``key`` (all when ``None``) on :attr:`device`, ``uint8 [K, C, H, W]``."""
        return _to_device(self.host(key), self.device)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of ``size`` rows on :attr:`device`; the next chunk is gathered
        on the host (and its copy started) before the current one is handed out."""
        starts = range(0, len(self), size)
        pending = None
        for start in starts:
            batch = _to_device(self.host(slice(start, start + size)), self.device)
            if pending is not None:
                yield pending
            pending = batch
        if pending is not None:
            yield pending

    def _rows(self, key: Any) -> torch.Tensor | slice:
        """Rows of the source for ``key``: positions ``int64 [K]``, or the slice itself when
        this view is the whole source (the host tensor is then sliced, not copied)."""
        if isinstance(key, slice):
            return key if self.index is None else self.index[key]
        pos = torch.as_tensor(np.asarray(key.cpu() if torch.is_tensor(key) else key))
        if pos.dtype == torch.bool:
            pos = pos.nonzero().flatten()
        pos = pos.long().reshape(-1)
        return pos if self.index is None else self.index[pos]


Images = torch.Tensor | HostImages
"""The training or test images of an experiment, resident or streamed."""


def take(x: Images, pos: torch.Tensor) -> torch.Tensor:
    """``x[pos]`` on ``x``'s device: one batch ``uint8 [B, C, H, W]``, whatever the placement."""
    return x.gather(pos) if isinstance(x, HostImages) else x[pos]


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return batch
    if not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def default_budget_bytes(device: torch.device) -> int:
    """The device budget when ``device_budget_gb`` is null: ``GPU_SHARE`` of a GPU's memory,
    ``HOST_SHARE`` of the host's physical memory on a CPU."""
    if device.type == "cuda":
        return int(GPU_SHARE * torch.cuda.get_device_properties(device).total_memory)
    return int(HOST_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def budget_bytes(config, device: torch.device) -> int:
    """``device_budget_gb`` in bytes, or :func:`default_budget_bytes`."""
    if config.device_budget_gb is None:
        return default_budget_bytes(device)
    return int(config.device_budget_gb * GIB)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where :func:`place` put the images: ``"resident"`` or ``"streamed"``, the bytes of the
    images and the budget they were held to, and whether Ray Data scores the pool."""

    mode: str
    image_bytes: int
    budget_bytes: int
    distributed: Distributed | None = None

    def describe(self) -> str:
        gb = f"{self.image_bytes / GIB:.2f} GiB of images"
        where = "on the device" if self.mode == "resident" else "on the host, streamed"
        ray = " (scored by Ray Data)" if self.distributed else ""
        return f"{gb} {where}{ray}, budget {self.budget_bytes / GIB:.2f} GiB"


def place(
    config, device: torch.device, *images: torch.Tensor, pool_size: int | None = None
) -> tuple[Placement, list[Images]]:
    """Put ``images`` (host tensors ``uint8 [N, C, H, W]``) where ``config`` says.

    Resident (moved to ``device``) when their bytes fit ``device_budget_gb`` and Ray Data does
    not score the pool; streamed (:class:`HostImages`) otherwise. Ray Data scores the pool when a
    Ray cluster is connected and the pool (``pool_size`` images, default the first tensor's) is
    at least ``distributed_min_pool``.
    """
    from pal.distributed import ray_connected  # here: keeps Ray out of plain runs

    total = sum(int(x.numel()) * x.element_size() for x in images)
    budget = budget_bytes(config, device)
    n = len(images[0]) if pool_size is None else pool_size
    dist = None
    threshold = config.distributed_min_pool
    if threshold is not None and n >= threshold and ray_connected():
        dist = Distributed(threshold, config.distributed_workers)
    if total <= budget and dist is None:
        return Placement("resident", total, budget), [x.to(device) for x in images]
    placed = [HostImages(x, device, distributed=dist) for x in images]
    return Placement("streamed", total, budget, dist), placed
