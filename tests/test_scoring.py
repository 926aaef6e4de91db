"""Formula tests of the scores against hand-computed values (Eq. 1, 3, 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from pal import scoring


def test_rotation_score_hand_values():
    perfect = torch.eye(4).expand(2, 4, 4)  # every rotation recognised with certainty
    uniform = torch.full((1, 4, 4), 0.25)
    probs = torch.tensor(
        [
            [
                [0.7, 0.1, 0.1, 0.1],
                [0.2, 0.5, 0.2, 0.1],
                [0.0, 0.0, 0.9, 0.1],
                [0.4, 0.3, 0.2, 0.1],
            ]
        ]
    )
    assert scoring.rotation_score(perfect).tolist() == [-4.0, -4.0]
    assert scoring.rotation_score(uniform).item() == pytest.approx(-1.0)
    # - (0.7 + 0.5 + 0.9 + 0.1): only the probability of the *applied* rotation counts
    assert scoring.rotation_score(probs).item() == pytest.approx(-2.2)


def test_rotation_score_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, 4, 4\]"):
        scoring.rotation_score(torch.rand(3, 4))


def test_kl_uniform_score_hand_values():
    p = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    got = scoring.kl_uniform_score(p.log())
    # -KL(U || p) = -sum_c (1/C) log((1/C) / p_c)
    expected = [-sum((1 / 3) * math.log((1 / 3) / pc) for pc in row) for row in p.tolist()]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert got[0].item() == pytest.approx(math.log(3) + (math.log(0.5) + 2 * math.log(0.25)) / 3)
    assert got[1].item() == pytest.approx(0.0, abs=1e-6)  # uniform = most unsure = highest


def test_kl_uniform_score_is_finite_for_confident_logits():
    logp = torch.log_softmax(torch.tensor([[200.0, 0.0, 0.0]]), dim=1)
    s_c = scoring.kl_uniform_score(logp)
    assert torch.isfinite(s_c).all()
    assert s_c.item() == pytest.approx(math.log(3) - 400.0 / 3, rel=1e-4)


def test_entropy_hand_values():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert scoring.entropy(p).tolist() == pytest.approx([math.log(2), 0.0])


def test_hybrid_score_eq4_and_zero_weights():
    s_s = torch.tensor([-1.0, -2.0])
    s_c = torch.tensor([-0.5, -math.inf])
    s_d = torch.tensor([-3.0, -1.0])
    assert scoring.hybrid_score(s_s, s_c, 2.0, s_d, 0.5).tolist()[0] == pytest.approx(-3.5)
    # lambda1 = 0 drops S_C entirely (no 0 * inf = nan)
    assert scoring.hybrid_score(s_s, s_c, 0.0, s_d, 1.0).tolist() == [-4.0, -3.0]
    assert scoring.hybrid_score(s_s, s_c, 0.0).tolist() == [-1.0, -2.0]


def test_top_n_picks_the_highest_scores_first():
    scores = torch.tensor([0.1, 0.9, -3.0, 0.5, 0.9])
    assert scoring.top_n(scores, 3).tolist() == [1, 4, 3]
    with pytest.raises(ValueError):
        scoring.top_n(scores, 6)


@pytest.mark.parametrize(("n", "k", "sizes"), [(10, 3, [4, 3, 3]), (5, 5, [1] * 5), (7, 1, [7])])
def test_subquery_sizes_sum_to_the_query(n, k, sizes):
    assert scoring.subquery_sizes(n, k) == sizes
    assert sum(scoring.subquery_sizes(n, k)) == n


def test_subquery_sizes_rejects_more_subqueries_than_samples():
    with pytest.raises(ValueError, match="subqueries"):
        scoring.subquery_sizes(3, 4)


def test_rotations_layout_matches_rot90():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    r = scoring.rotations(x).view(2, 4, 1, 3, 3)
    for b in range(2):
        for i in range(4):
            assert torch.equal(r[b, i], torch.rot90(x[b], i, dims=(-2, -1)))
    assert scoring.rotation_labels(2).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="square"):
        scoring.rotations(torch.zeros(1, 1, 3, 4))


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    b[:20] = b[20]  # ties
    ta, tb = torch.tensor(a), torch.tensor(b)
    assert scoring.pearson(ta, tb) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-9)
    assert scoring.spearman(ta, tb) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-9)
    assert math.isnan(scoring.pearson(ta, torch.ones(200)))
