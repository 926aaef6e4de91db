"""Randomness passed in, never global: every random draw comes from a seed derived from the
config's ``seed`` and a purpose (``"task", round``), so a round gives the same draws whether it
runs straight through or after a resume."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *purpose: str | int) -> int:
    """A 63-bit seed for ``purpose`` under the experiment ``seed``; stable across processes."""
    words = [seed] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in purpose]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, *purpose: str | int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *purpose))


def torch_generator(device: torch.device | str, seed: int, *purpose: str | int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``purpose`` (randperm, crops, flips)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *purpose))
    return gen


@contextlib.contextmanager
def seeded_init(seed: int, *purpose: str | int) -> Iterator[None]:
    """Seed the CPU generator that ``nn.Module`` constructors draw their initial weights from,
    for the block only; the caller's global RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *purpose))
        yield


@contextlib.contextmanager
def global_rng_from(generator: torch.Generator) -> Iterator[None]:
    """Seed the global RNG of ``generator``'s device from ``generator``'s seed for the block,
    restoring the caller's state afterwards.

    Training draws every random number it knows of from seeded generators; this is for the
    layers it does not know of (a registered backbone's own noise, a third-party block) that
    draw from the global RNG: inside a fit they see the same stream for the same seed, however
    many numbers other code in the process drew before. ``generator`` itself is not advanced.
    """
    device, devices = generator.device, []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        seed = derive_seed(generator.initial_seed(), "global-rng")
        torch.manual_seed(seed)  # seeds every device's default generator
        yield
