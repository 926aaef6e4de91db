"""Training and inference on uint8 image tensors: one fitting loop for every network.

Images stay ``uint8 [N, C, H, W]`` on the device (or, for pools above the device budget, on the
host, :mod:`pal.placement`); each step gathers a batch by index (:func:`pal.placement.take`),
augments it on the device (random crop with padding, horizontal flip), normalises it and runs the
model. No DataLoader, no per-sample Python, no host synchronisation inside an epoch of a resident
pool.

- :mod:`pal.training.runtime`: device, precision and memory format (:class:`Runtime`);
- :mod:`pal.training.transforms`: :class:`Normalizer`, augmentations and shuffled batches;
- :mod:`pal.training.fitting`: the fitting loop (:func:`fit`, :class:`FitSpec`) and the
  classification and segmentation trainers;
- :mod:`pal.training.inference`: eval-mode inference in chunks (:func:`map_chunks`; Ray Data only
  in :mod:`pal.distributed`).

The names below are re-exported here; the submodules import each other directly. Patch a
function where it is looked up (e.g. ``pal.training.fitting.fit``), not on this package.
"""

from __future__ import annotations

from pal.training.fitting import (
    FitReport,
    FitSpec,
    ProgressFn,
    Selection,
    TrainingDivergedError,
    UnderfitWarning,
    accuracy,
    console_warnings,
    fit,
    fit_advice,
    pixel_cross_entropy,
    train_classifier,
    train_segmenter,
    underfit_message,
    warn_underfit,
)
from pal.training.inference import (
    CACHE_SHARE,
    FALLBACK_CACHE_BYTES,
    WEIGHT_MACS_PER_BYTE,
    WEIGHT_SHARE,
    ForwardProfile,
    eval_chunk,
    eval_chunks,
    forward_profile,
    last_level_cache_bytes,
    map_chunks,
    predict_features,
    predict_logits,
    predict_reduced,
)
from pal.training.runtime import (
    Runtime,
    clear_cast_cache,
    cpu_has_bf16,
    resolve_device,
    resolve_speed,
)
from pal.training.transforms import Normalizer, augment, augment_with_masks, batches

__all__ = [
    "CACHE_SHARE",
    "FALLBACK_CACHE_BYTES",
    "WEIGHT_MACS_PER_BYTE",
    "WEIGHT_SHARE",
    "FitReport",
    "FitSpec",
    "ForwardProfile",
    "Normalizer",
    "ProgressFn",
    "Runtime",
    "Selection",
    "TrainingDivergedError",
    "UnderfitWarning",
    "accuracy",
    "augment",
    "augment_with_masks",
    "batches",
    "clear_cast_cache",
    "console_warnings",
    "cpu_has_bf16",
    "eval_chunk",
    "eval_chunks",
    "fit",
    "fit_advice",
    "forward_profile",
    "last_level_cache_bytes",
    "map_chunks",
    "pixel_cross_entropy",
    "predict_features",
    "predict_logits",
    "predict_reduced",
    "resolve_device",
    "resolve_speed",
    "train_classifier",
    "train_segmenter",
    "underfit_message",
    "warn_underfit",
]
