"""PAL's pretext tasks, registered by name; importing this package registers the built-in ones.

:class:`Pretext` is the seam (:mod:`pal.pretext.base`); rotation prediction
(:mod:`pal.pretext.rotation`, classification) and SimCLR (:mod:`pal.pretext.simclr`,
segmentation) are its implementations. A pretext for another task is a module that registers a
subclass with :func:`register_pretext`, imported below.
"""

from pal.pretext import rotation, simclr  # noqa: F401  (registration)
from pal.pretext.base import (
    PRETEXTS,
    DiversityFn,
    LossFn,
    PoolScores,
    Pretext,
    pretext_for,
    pretext_tasks,
    register_pretext,
)

__all__ = [
    "PRETEXTS",
    "DiversityFn",
    "LossFn",
    "PoolScores",
    "Pretext",
    "pretext_for",
    "pretext_tasks",
    "register_pretext",
]
