"""The pool: labeling, its state as plain data, and the seeded draw of the initial pool."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import pal
from pal.config import ConfigError
from pal.pool import PendingQuery, Pool, draw_pool


def oracle(indices: np.ndarray) -> list[int]:
    return (np.asarray(indices) % 3).tolist()


def make_pool() -> Pool:
    return Pool(np.arange(10), np.array([0, 1]), np.array([5, 2]), oracle)


def test_label_moves_samples_from_unlabeled_to_labeled_in_order():
    pool = make_pool()
    assert pool.labeled.tolist() == [5, 2]
    assert pool.unlabeled.tolist() == [3, 4, 6, 7, 8, 9]
    assert pool.n_budget == 8
    pool.label([9, 3])
    assert pool.labeled.tolist() == [5, 2, 9, 3]
    assert pool.unlabeled.tolist() == [4, 6, 7, 8]
    assert pool.labeled.dtype == pool.unlabeled.dtype == np.int64


@pytest.mark.parametrize(
    "ids", [[2], [0], [12], [4, 4]], ids=["labeled", "val", "outside", "twice"]
)
def test_label_refuses_what_is_not_unlabeled(ids):
    pool = make_pool()
    with pytest.raises(ValueError, match="unlabeled"):
        pool.label(ids)
    assert pool.labeled.tolist() == [5, 2]  # nothing half-labeled


def test_state_dict_is_plain_json_and_round_trips_with_the_pending_query():
    pool = make_pool()
    pool.label([4])
    pool.pending = PendingQuery((7, 8), {"ss_sc_pearson": 0.5, "fit": 0.9}, 1.5, ("fit",))
    state = json.loads(json.dumps(pool.state_dict()))
    assert state == {
        "labeled": [5, 2, 4],
        "oracle_labels": [2, 2, 1],
        "pending": {
            "indices": [7, 8],
            "metrics": {"ss_sc_pearson": 0.5, "fit": 0.9},
            "seconds": 1.5,
            "fit_keys": ["fit"],
        },
    }
    again = make_pool()
    again.load_state_dict(state)
    assert again.labeled.tolist() == [5, 2, 4] and again.pending == pool.pending
    assert again.unlabeled.tolist() == pool.unlabeled.tolist()
    del state["pending"]["fit_keys"]  # a checkpoint from before fit_keys
    again.load_state_dict(state)
    assert again.pending.fit_keys == ()


def test_a_state_with_other_oracle_labels_is_refused():
    state = make_pool().state_dict()
    other = Pool(np.arange(10), np.array([0, 1]), np.array([5, 2]), lambda i: [0] * len(i))
    with pytest.raises(ValueError, match="oracle labels differ"):
        other.load_state_dict(state)


def test_draw_pool_is_decided_by_the_seed():
    config = pal.make_config(pool_size=200, val_size=20, initial_size=15, query_size=5, rounds=3)

    def everything(rest):
        return rest

    a, b = (draw_pool(config, 1000, everything) for _ in range(2))
    c = draw_pool(pal.make_config(config, seed=1), 1000, everything)
    assert (a.initial_size, a.query_size) == (15, 5)
    assert a.pool.labeled.tolist() == b.pool.labeled.tolist() != c.pool.labeled.tolist()
    assert a.pool.val.tolist() == b.pool.val.tolist()
    assert len(a.pool.indices) == 200 and len(a.pool.unlabeled) == 200 - 20 - 15
    assert not set(a.pool.val) & set(a.pool.labeled)
    odd = draw_pool(config, 1000, lambda rest: rest[rest % 2 == 1])
    assert all(i % 2 == 1 for i in odd.pool.labeled)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        (
            dict(pool_size=200, val_size=20, initial_size=15, query_size=5, rounds=3),
            ([2, 104, 185, 233, 322], [911, 422, 461, 307, 514], "d241b305c39882d0"),
        ),
        (
            dict(val_size=100, rounds=2, seed=3),
            ([2, 3, 73, 75, 86], [596, 872, 712, 8, 173], "7df94229768da5fa"),
        ),
    ],
)
def test_draw_pool_draws_what_it_always_drew(sizes, expected):
    # pinned: a dataset without its own validation split keeps the pools of earlier versions
    plan = draw_pool(pal.make_config(**sizes), 1000, lambda rest: rest[rest % 3 != 0])
    pool = plan.pool
    digest = hashlib.sha1(np.concatenate([pool.indices, pool.val, pool.labeled]).tobytes())
    assert (pool.val[:5].tolist(), pool.labeled[:5].tolist(), digest.hexdigest()[:16]) == expected


def test_a_declared_validation_split_is_the_validation_set():
    fixed = np.array([7, 3, 950, 500])
    config = pal.make_config(pool_size=200, val_size=900, initial_size=15, query_size=5, rounds=3)
    a, b = (draw_pool(config, 1000, lambda rest: rest, fixed_val=fixed) for _ in range(2))
    assert a.pool.val.tolist() == [3, 7, 500, 950]  # val_size is not used
    # pool_size counts the images besides the validation set: the labeling budget
    assert a.pool.n_budget == 200 and len(a.pool.indices) == 204
    assert set(fixed) <= set(a.pool.indices.tolist())
    assert len(a.pool.unlabeled) == 200 - 15
    assert not set(a.pool.labeled) & set(fixed) and not set(a.pool.unlabeled) & set(fixed)
    assert a.pool.indices.tolist() == b.pool.indices.tolist()
    assert a.pool.labeled.tolist() == b.pool.labeled.tolist()
    every = draw_pool(pal.make_config(config, pool_size=None), 1000, lambda r: r, fixed_val=fixed)
    assert every.pool.n_budget == 996 and len(every.pool.indices) == 1000
    with pytest.raises(ConfigError, match=r"pool_size: .*\(1000 - 4 = 996\), got 997"):
        draw_pool(pal.make_config(config, pool_size=997), 1000, lambda r: r, fixed_val=fixed)
