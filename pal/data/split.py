"""The fixed train/test split of datasets that come without an official one.

The split is drawn with ``numpy.random.default_rng(0)``: it belongs to the dataset, not to an
experiment, so runs with different seeds are scored on the same test images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(
    labels: np.ndarray, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified train/test split of int labels ``[N]``.

    Each class gives its share of ``n_test`` (largest remainder, so the shares add up exactly),
    picked with ``default_rng(seed)``. Returns sorted index arrays ``(train [N - n_test],
    test [n_test])``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_test / len(labels))
    take = np.floor(quota).astype(np.int64)
    short = n_test - int(take.sum())
    # stable sort so ties go to the lower class id, independent of numpy's sort kind
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[:k]
            for c, k in zip(classes, take, strict=True)
        ]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
