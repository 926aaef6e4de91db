"""Scoring a pool across a Ray cluster with Ray Data.

A pool too big for one device's scoring pass is split into the very chunks the single-process
pass would run (:func:`pal.training.eval_chunk`), and Ray Data's ``map_batches`` hands them to a
pool of actors (:class:`ChunkActor`, a callable class): each loads the trained network once, on
its GPU or CPU, and runs the same per-chunk function (``fn(model, normalized chunk)``) under the
same autocast. The per-image outputs come back in pool order (Ray Data preserves it) on the
caller's device, where the rest of the query (PAL's sub-queries, a top-n) runs. Same chunks,
same kernels, same weights: the same numbers as the single-process pass.

The only module of ``pal`` that uses Ray Data (Ray Tune is :mod:`pal.sweeps`'s). Outside a
sweep, Ray is imported only here, and only once a cluster is connected (``pal label next
--address``, ``RAY_ADDRESS``, or a Tune trial): a plain run never starts it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

ChunkFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]]
"""``fn(model, normalized chunk [B, C, H, W]) -> per-image outputs, each [B, ...]`` (fp32 or
int64): what :func:`pal.training.map_chunks` runs on every chunk."""

RELEASE_WAIT = 10.0
"""Seconds to wait for the actors of a previous pass to give back their GPUs or CPUs."""


def ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster (without importing Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def connect(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``); ``False`` when neither
    names one. A Tune trial is connected already."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return ray_connected()
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    return True


def actor_resources(
    device: torch.device, workers: int | None, wait: float = RELEASE_WAIT
) -> tuple[int, dict[str, float]]:
    """``(actors, resources per actor)`` for scoring on ``device``'s kind of hardware: one GPU
    per actor (``workers`` actors, default every free GPU), or one CPU per actor on a CPU
    (default every free CPU). ``(0, {})`` when the cluster has nothing free after ``wait``
    seconds (the actors of a pass that just ended give their resources back asynchronously)."""
    import ray

    kind = "GPU" if device.type == "cuda" else "CPU"
    want = workers or int(ray.cluster_resources().get(kind, 0))
    deadline = time.monotonic() + wait
    while True:
        available = int(ray.available_resources().get(kind, 0))
        if available >= want or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    n = min(want, available)
    if n < 1:
        return 0, {}
    return n, {"num_gpus": 1, "num_cpus": 1} if kind == "GPU" else {"num_cpus": 1}


class ChunkActor:
    """A Ray Data actor: the network loaded once, then ``fn`` on each chunk it is given.

    Args:
        fn: the per-chunk function (:data:`ChunkFn`).
        model: the network in eval mode, on the host.
        normalize: the experiment's :class:`pal.training.Normalizer`, on the host.
        autocast_dtype: the caller's autocast dtype, ``None`` for fp32.
    """

    def __init__(self, fn: ChunkFn, model: nn.Module, normalize, autocast_dtype):
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
        gpu = assigned.get("GPU", 0) > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        self.fn = fn
        self.model = model.to(self.device).eval()
        self.normalize = normalize.to(self.device)
        self.autocast_dtype = autocast_dtype
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"data": k chunks uint8 [b, C, H, W]}`` -> ``{"node": [n], "out0": [n, ...],
        ...}`` for the ``n`` images of the ``k`` chunks, in chunk order."""
        outs = []
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.bfloat16,
                enabled=self.autocast_dtype is not None,
            ),
        ):
            for images in batch["data"]:
                # a fresh tensor: the batch's own strides (a size-1 channel's, after Arrow) can
                # steer a convolution to another kernel than the caller's canonical layout
                chunk = torch.empty(images.shape, dtype=torch.uint8)
                chunk.copy_(torch.from_numpy(np.asarray(images)))
                chunk = chunk.to(self.device)
                outs.append([t.cpu().numpy() for t in self.fn(self.model, self.normalize(chunk))])
        result = {}
        for i, parts in enumerate(zip(*outs, strict=True)):
            result[f"out{i}"] = np.concatenate(parts)
        result["node"] = np.full(len(result["out0"]), self.node)
        return result


def ray_map_chunks(
    fn: ChunkFn, model: nn.Module, x, normalize, chunk: int, device: torch.device
) -> tuple[torch.Tensor, ...] | None:
    """``fn`` over the chunks of ``chunk`` images of ``x`` (a :class:`pal.placement.HostImages`)
    on Ray Data actors, outputs concatenated in pool order on ``device``; ``None`` when the
    cluster has no free GPU (or CPU) for an actor: the caller then scores the pool itself."""
    import ray

    workers, resources = actor_resources(device, x.distributed.workers)
    if workers < 1:
        warnings.warn(
            "distributed_min_pool: the Ray cluster has no free resources for a scoring actor; "
            "scoring the pool in this process",
            stacklevel=3,
        )
        return None
    n, start = len(x), time.perf_counter()
    # one Ray Data row per chunk, put in the object store a chunk at a time: the caller never
    # holds more than one chunk beyond its pool (which may be a memory-mapped decode cache),
    # and Ray spills the store to disk when the pool outgrows it
    refs = [ray.put(x.host(slice(s, s + chunk)).numpy()[None]) for s in range(0, n, chunk)]
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # outputs in pool order
    # Ray Data's per-run usage report queries a metrics server pal's clusters do not run
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    dataset, chunks = ray.data.from_numpy_refs(refs), len(refs)
    del refs  # the dataset's blocks hold the chunks now
    on = torch.is_autocast_enabled(device.type)
    autocast = torch.get_autocast_dtype(device.type) if on else None
    host_model = copy.deepcopy(model).cpu().eval()
    host_normalize = copy.copy(normalize).to(torch.device("cpu"))
    scored = dataset.map_batches(
        ChunkActor,
        batch_size=1,
        batch_format="numpy",
        fn_constructor_args=(fn, host_model, host_normalize, autocast),
        compute=ray.data.ActorPoolStrategy(size=workers),
        **resources,
    )
    parts: dict[str, list[np.ndarray]] = {}
    for block in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for key, value in block.items():
            parts.setdefault(key, []).append(value)
    nodes = len(np.unique(np.concatenate(parts.pop("node"))))
    outs = [np.concatenate(parts[f"out{i}"]) for i in range(len(parts))]
    if len(outs[0]) != n:
        raise RuntimeError(f"Ray Data scored {len(outs[0])} images of a pool of {n}")
    global _LAST_RUN
    _LAST_RUN = RayRun(workers, nodes, chunks, n, time.perf_counter() - start)
    return tuple(torch.from_numpy(a).to(device) for a in outs)


@dataclasses.dataclass(frozen=True)
class RayRun:
    """What the last :func:`ray_map_chunks` in this process did: its actors, the nodes they
    ran on, the chunks and images they scored and the seconds it took."""

    actors: int
    nodes: int
    chunks: int
    images: int
    seconds: float


_LAST_RUN: RayRun | None = None


def last_ray_run() -> RayRun | None:
    """The :class:`RayRun` of the last pool this process scored on Ray Data (``None``: none)."""
    return _LAST_RUN
