"""Presets for labeling projects: method keys that fit the kind of pool a person brings.

:class:`pal.config.Config`'s defaults are tuned on scikit-learn's 8x8 digits; on other images
they can leave the networks short of fitting their own labels (on 3,000 CIFAR-10 JPEGs with 100
labels the task network fit them at 0.58, the scoring network's rotation head at 0.51). A preset
is plain data, a few ``method`` keys (:func:`pal.config.keys_in`), one per kind of pool:

- ``grey-tiny``: greyscale images of 16 px or less a side (the digits): the defaults, unchanged;
- ``grey-small``: greyscale images of 17 to 48 px a side (MNIST's 28x28);
- ``photo-small``: colour images of 48 px or less a side (CIFAR's 32x32);
- ``photo-large``: images above 48 px a side, colour or not.

:func:`pick_preset` chooses one from the decoded pool's image size and channels (its reason
names the count too: no preset depends on it yet);
:func:`preset_named` gives one by name. :func:`pal.labeling.setup.init_project` applies it under
the user's own keys (preset < ``--config`` / ``--from-sweep`` / ``--from-run`` < ``--set``, key
by key) and records it in the project's ``source``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from pal.config import ConfigError
from pal.data import ImageData

AUTO = "auto"
"""``init_project(preset=AUTO)``: the preset :func:`pick_preset` chooses for the pool."""

NONE = "none"
"""``init_project(preset=NONE)``: no preset, the config's defaults."""

SMALL = 48
"""The largest side (px) of a small image; above it, ``photo-large``."""

TINY = 16
"""The largest side (px) of a tiny greyscale image (the digits' 8x8), which keeps the defaults."""


_PHOTO = {
    "batch_size": 16,
    "augment": "none",
    "model_selection": "last",
    "epochs_task": 60,
    "epochs_task_max": 240,
    "epochs_scoring": 120,
}
"""The colour-photo keys, measured on 3,000 CIFAR-10 JPEGs with 100 labels (PRESETS says why)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """A preset: its ``name``, the ``kind`` of pool it is for (words), its ``keys`` (method
    keys only) and ``why`` these keys (one clause)."""

    name: str
    kind: str
    keys: Mapping[str, Any]
    why: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "grey-tiny",
            "tiny greyscale images",
            {},
            "the defaults are tuned on scikit-learn's 8x8 digits",
        ),
        Preset(
            "grey-small",
            "small greyscale images",
            {
                "batch_size": 16,
                "model_selection": "last",
                "epochs_task": 60,
                "epochs_task_max": 240,
                "epochs_scoring": 60,
            },
            "with 100 MNIST labels, batches of 16 for 60 epochs, keeping the last epoch, fit the "
            "task network (1.0 on its labels, against 0.98) and the class head (1.0 against "
            "0.97) and took the rotation head from 0.81 to 0.90",
        ),
        Preset(
            "photo-small",
            "small colour photos",
            _PHOTO,
            "with 100 CIFAR-10 labels the defaults fit them at 0.58: a batch of 64 is two steps "
            "an epoch, random crops and flips keep 100 photos from being learned in a CPU's "
            "budget, and the best-validation checkpoint is an early, unfitted epoch; batches of "
            "16 without augmentation, keeping the last epoch, fit them at 1.0",
        ),
        Preset(
            "photo-large",
            "larger images",
            _PHOTO,
            "the small-photo keys, not measured on larger images; a CPU round stays short only "
            "at a small image_size (--set image_size=64 decodes the images smaller)",
        ),
    )
}
"""Every preset by name (:func:`pick_preset` says which pool gets which)."""


class PresetChoice(NamedTuple):
    """A preset chosen for a pool: its ``name``, its ``keys`` and a one-sentence ``reason``
    (the pool, the preset's kind and why its keys)."""

    name: str
    keys: dict[str, Any]
    reason: str


def pool_shape(data: ImageData) -> tuple[int, int, int, int]:
    """``(images, channels, height, width)`` of ``data``'s pool: the training split less its
    declared validation images."""
    n, c, h, w = data.x_train.shape
    val = 0 if data.val_indices is None else len(data.val_indices)
    return n - val, c, h, w


def describe_pool(images: int, channels: int, height: int, width: int) -> str:
    """``"32x32x3, 3,000 images"``."""
    return f"{height}x{width}x{channels}, {images:,} images"


def preset_name_for(channels: int, height: int, width: int) -> str:
    """The preset of a pool of ``channels``-channel ``height x width`` images (see the module
    docstring)."""
    side = max(height, width)
    if side > SMALL:
        return "photo-large"
    if channels == 1:
        return "grey-tiny" if side <= TINY else "grey-small"
    return "photo-small"


def check_name(name: str) -> str:
    """``name`` when it is a preset's, :data:`AUTO` or :data:`NONE`.

    Raises:
        ConfigError: naming the presets.
    """
    if name not in (AUTO, NONE, *PRESETS):
        raise ConfigError(
            f"preset: unknown {name!r}; presets are {sorted(PRESETS)}, {AUTO!r} (chosen from "
            f"the pool's images) or {NONE!r}"
        )
    return name


def preset_named(name: str, data: ImageData) -> PresetChoice:
    """The preset ``name`` for ``data``'s pool (chosen by the user: the reason says so).

    Raises:
        ConfigError: no such preset.
    """
    if check_name(name) not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not a preset's name; give one of {sorted(PRESETS)}")
    return _choice(PRESETS[name], pool_shape(data), chosen=False)


def pick_preset(data: ImageData) -> PresetChoice:
    """The preset for ``data``'s pool, chosen from its images' size and channels
    (:func:`preset_name_for`); the reason gives the pool's size, channels and count."""
    shape = pool_shape(data)
    return _choice(PRESETS[preset_name_for(*shape[1:])], shape, chosen=True)


def _choice(preset: Preset, shape: tuple[int, int, int, int], chosen: bool) -> PresetChoice:
    pool = describe_pool(*shape)
    if chosen:
        reason = f"{preset.kind} ({pool}) get preset {preset.name}: {preset.why}."
    else:
        reason = f"preset {preset.name} as asked, for {preset.kind} ({pool}): {preset.why}."
    return PresetChoice(preset.name, dict(preset.keys), reason)


def source_entry(
    choice: PresetChoice, data: ImageData, given: set[str], asked: str
) -> dict[str, Any]:
    """What a project's ``source`` records of its preset: ``name``, ``asked`` (``auto`` or the
    name given), ``kind``, ``pool`` (words), ``reason``, ``keys`` (those applied) and
    ``overridden`` (the preset's keys the user's config, sweep, run or ``--set`` gave)."""
    applied = {k: v for k, v in choice.keys.items() if k not in given}
    return {
        "name": choice.name,
        "asked": asked,
        "kind": PRESETS[choice.name].kind,
        "pool": describe_pool(*pool_shape(data)),
        "reason": choice.reason,
        "keys": applied,
        "overridden": sorted(set(choice.keys) & given),
    }


def summary_line(entry: Mapping[str, Any] | None) -> str:
    """One line on a project's preset (its ``source["preset"]``; ``None``: none asked)."""
    if entry is None:
        return "no preset (--preset none): the config's own keys"
    keys = entry.get("keys") or {}
    shown = ", ".join(f"{k}={v}" for k, v in keys.items()) or "the defaults"
    line = f"defaults for {entry['kind']} ({entry['pool']}): preset {entry['name']}: {shown}"
    if entry.get("overridden"):
        line += f" (yours instead: {', '.join(entry['overridden'])})"
    return line
