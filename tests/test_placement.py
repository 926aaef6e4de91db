"""Where the pool lives: resident tensors below the device budget, host images streamed above it,
with the same numbers; and the candidate pre-filter."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pal.config import Config, ConfigError
from pal.loop import Experiment
from pal.placement import HostImages, default_budget_bytes, place, take
from pal.pool import draw_candidates
from tests.conftest import FAST

ONE_ROUND = {**FAST, "rounds": 1, "eval_batch_size": 64}


def images(n: int = 50) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 4, 4), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )


def test_host_images_index_lazily_and_gather_what_a_tensor_would():
    x = images()
    host = HostImages(x, "cpu")
    assert host.shape == x.shape and len(host) == 50 and host.dtype == torch.uint8
    view = host[torch.tensor([40, 3, 7, 7, 12])]
    assert view.source is x  # a view: nothing copied
    assert torch.equal(view.gather(), x[[40, 3, 7, 7, 12]])
    nested = view[torch.tensor([4, 0])][1:]
    assert torch.equal(nested.gather(), x[[40]])
    mask = torch.zeros(50, dtype=torch.bool)
    mask[[1, 9]] = True
    assert torch.equal(host[mask].gather(), x[mask])
    assert torch.equal(host[10:20:3].gather(), x[10:20:3])
    assert torch.equal(take(host, torch.tensor([5, 2])), take(x, torch.tensor([5, 2])))
    chunks = list(host[torch.arange(49, -1, -1)].split(16))
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(chunks), x.flip(0))


def test_place_streams_above_the_budget_only():
    x = images()
    cfg = Config(device="cpu")
    placement, (resident,) = place(cfg, torch.device("cpu"), x)
    assert placement.mode == "resident" and resident is x  # moved to the CPU: itself
    assert placement.budget_bytes == default_budget_bytes(torch.device("cpu")) > x.numel()
    placement, (streamed,) = place(cfg.replace(device_budget_gb=x.numel() / 2**30 / 2), "cpu", x)
    assert placement.mode == "streamed" and isinstance(streamed, HostImages)
    assert placement.image_bytes == x.numel() and "streamed" in placement.describe()


STRATEGY_CONFIGS = [
    {"strategy": "pal"},
    {"strategy": "pal", "finetune_scope": "all"},
    {"strategy": "entropy"},
    {"strategy": "coreset"},
    {"strategy": "dbal", "dropout": 0.3},
    {"strategy": "vaal", "vaal_epochs": 1},
    {"strategy": "pal", "dataset": "digit_scenes", "pool_size": 120, "val_size": 12,
     "initial_size": 12, "query_size": 6, "task_backbone": "segcnn", "scoring_backbone": "segcnn"},
]  # fmt: skip


@pytest.mark.parametrize("extra", STRATEGY_CONFIGS, ids=lambda e: "-".join(map(str, e.values())))
def test_streamed_pool_gives_the_resident_pools_queries_and_accuracies(extra):
    runs = []
    for budget in (None, 0.0):
        experiment = Experiment(Config(**{**ONE_ROUND, **extra, "device_budget_gb": budget}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = list(experiment.rounds())
        runs.append((experiment.placement.mode, records))
    (mode_a, resident), (mode_b, streamed) = runs
    assert (mode_a, mode_b) == ("resident", "streamed")
    assert len(streamed[-1].selected) > 0
    for a, b in zip(resident, streamed, strict=True):
        assert a.selected == b.selected
        assert a.test_accuracy == b.test_accuracy and a.val_accuracy == b.val_accuracy
        assert a.query_metrics == b.query_metrics and a.task_metrics == b.task_metrics


def test_candidates_are_a_seeded_sorted_subset():
    unlabeled = np.arange(0, 1000, 3)
    a = draw_candidates(unlabeled, 50, seed=1, r=2)
    assert len(a) == 50 and np.all(np.diff(a) > 0) and np.isin(a, unlabeled).all()
    assert np.array_equal(a, draw_candidates(unlabeled, 50, seed=1, r=2))
    assert not np.array_equal(a, draw_candidates(unlabeled, 50, seed=1, r=3))
    assert draw_candidates(unlabeled, None, 1, 2) is unlabeled
    assert draw_candidates(unlabeled, 5000, 1, 2) is unlabeled


def test_candidate_pool_limits_what_each_query_scores():
    cfg = Config(**{**FAST, "strategy": "entropy", "candidate_pool": 30})
    experiment = Experiment(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = list(experiment.rounds())
    for record in records[1:]:
        r = record.round
        # the query of round r was drawn at the end of round r - 1 from that round's D_U
        before = np.setdiff1d(
            experiment.pool.indices,
            np.concatenate([experiment.pool.labeled[: 40 + 20 * (r - 1)], experiment.pool.val]),
        )
        assert np.isin(record.selected, draw_candidates(before, 30, cfg.seed, r)).all()


def test_candidate_pool_smaller_than_the_query_is_refused_before_training():
    with pytest.raises(ConfigError, match="candidate_pool: must be >= the query size \\(20\\)"):
        Experiment(Config(**{**FAST, "candidate_pool": 10}))
