"""Where and how networks run: the device, the precision and the memory format.

:class:`Runtime` bundles the ``torch.device``, the autocast dtype (``None``: fp32) and the memory
format of images and convolutions, resolved from a config by :func:`resolve_device` and
:func:`resolve_speed` (bf16 autocast and channels-last where the hardware gains from them; on a
CPU only once every classification strategy held its accuracy in bf16, which the caller says:
:func:`pal.strategies.cpu_bf16_proven`).
:func:`clear_cast_cache` drops autocast's bf16 weight copies after each optimizer step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pal.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how networks run: the device, the autocast dtype (``None``: fp32) and the
    memory format of images and convolutions."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @classmethod
    def from_config(
        cls, config, kind: str = "classification", cpu_bf16_proven: bool = False
    ) -> Runtime:
        """Resolve ``device``, ``precision`` and ``memory_format`` for a ``kind`` task (see
        :func:`resolve_device` and :func:`resolve_speed`).

        Raises:
            ConfigError: ``device: ...`` or ``precision: ...`` for what this machine lacks.
        """
        device = resolve_device(config.device)
        return cls(device, *resolve_speed(config, device, kind, cpu_bf16_proven))

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


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: AMX-BF16 tiles (Intel Sapphire Rapids and later)
    or AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake), as oneDNN uses them."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_speed(
    config, device: torch.device, kind: str = "classification", cpu_bf16_proven: bool = False
) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype (``None``: fp32) and the image memory format for ``device``.

    ``auto`` means bf16 autocast and channels-last on a CUDA GPU with bf16 support (Ampere and
    later), and for classification on a CPU with bf16 units (:func:`cpu_has_bf16`) once every
    strategy has been shown to hold its accuracy in bf16 (``cpu_bf16_proven``:
    :func:`pal.strategies.cpu_bf16_proven`); fp32 and contiguous elsewhere (on CPUs without
    those units both cost more than they save).

    Raises:
        ConfigError: ``precision: ...`` for bf16 on a GPU without bf16 support.
    """
    gpu = device.type == "cuda"
    bf16_ok = not gpu or torch.cuda.is_bf16_supported()
    if config.precision == "bf16" and not bf16_ok:
        raise ConfigError("precision: this GPU has no bf16 support; use fp32 or auto")
    cpu_units = not gpu and cpu_has_bf16()
    proven = kind == "classification" and cpu_bf16_proven
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


def clear_cast_cache() -> None:
    """Drop autocast's low-precision copies of the weights after an optimizer step.

    Inside one ``torch.autocast`` region the bf16 copy of a parameter is made once and reused;
    without this, every step after the first would run the forward pass on the weights as they
    were at the first step.
    """
    torch.clear_autocast_cache()
