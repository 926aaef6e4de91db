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


# ------------------------------------------------------------ score_norm and the terms' weight
def test_zscore_normalisation_hand_values():
    s = torch.tensor([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(1.25)  # population std of 1..4
    expected = [(v - 2.5) / std for v in s.tolist()]
    assert scoring.normalize_score(s, "zscore").tolist() == pytest.approx(expected)
    assert scoring.normalize_score(torch.full((3,), -7.0), "zscore").tolist() == [0.0] * 3
    assert scoring.normalize_score(s, "none") is s


def test_rank_normalisation_hand_values_with_ties():
    s = torch.tensor([10.0, -5.0, 10.0, 0.0])
    # ranks -5 -> 1, 0 -> 2, the two 10s share (3 + 4) / 2; scaled by (r - 1) / (N - 1)
    got = scoring.normalize_score(s, "rank")
    assert got.tolist() == pytest.approx([2.5 / 3, 0.0, 2.5 / 3, 1.0 / 3])
    assert scoring.normalize_score(torch.tensor([3.0]), "rank").tolist() == [0.0]
    with pytest.raises(ValueError, match="score_norm"):
        scoring.normalize_score(s, "minmax")


@pytest.mark.parametrize("norm", ["zscore", "rank"])
def test_normalisation_keeps_a_huge_scale_term_from_dominating(norm):
    """S_C at 1000x the scale of S_S ranks alone unless each term is standardised first."""
    gen = torch.Generator().manual_seed(0)
    s_s = torch.randn(200, generator=gen)
    s_c = torch.randn(200, generator=gen)
    raw = scoring.run_subqueries(s_s, 1000 * s_c, [20], 1.0, 0.0)
    assert raw.diagnostics["score_sc_spearman"] > 0.999  # S_S does not count
    assert torch.equal(raw.picked, scoring.top_n(s_c, 20))
    normed = scoring.run_subqueries(s_s, 1000 * s_c, [20], 1.0, 0.0, score_norm=norm)
    same_scale = scoring.run_subqueries(s_s, s_c, [20], 1.0, 0.0, score_norm=norm)
    assert torch.equal(normed.picked, same_scale.picked)  # the scale of S_C does not matter
    d = normed.diagnostics
    assert 0.5 < d["score_ss_spearman"] < 0.9 and 0.5 < d["score_sc_spearman"] < 0.9
    assert d["sc_std"] == pytest.approx(1000 * d["ss_std"], rel=0.3)  # raw terms' spread


@pytest.mark.parametrize("norm", ["zscore", "rank"])
def test_score_norm_applies_to_s_d_on_the_remaining_pool(norm):
    """A 1000x S_D decides the second sub-query alone, unless it is standardised first."""
    gen = torch.Generator().manual_seed(2)
    s_s, s_c = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    s_d = torch.randn(40, generator=gen)  # by pool position; the diversity sees the remaining
    seen = []

    def diversity(scale):
        def s_d_of(picked, remaining):
            seen.append(remaining.numel())
            return scale * s_d[remaining]

        return s_d_of

    raw = scoring.run_subqueries(s_s, s_c, [5, 5], 1.0, 1.0, diversity(1000.0))
    first, second = raw.picked[:5], raw.picked[5:]
    rest = torch.tensor([i for i in range(40) if i not in first.tolist()])
    assert torch.equal(second, rest[scoring.top_n(s_d[rest], 5)])  # S_D alone
    normed = scoring.run_subqueries(s_s, s_c, [5, 5], 1.0, 1.0, diversity(1000.0), norm)
    same = scoring.run_subqueries(s_s, s_c, [5, 5], 1.0, 1.0, diversity(1.0), norm)
    assert torch.equal(normed.picked, same.picked)
    assert not torch.equal(normed.picked[5:], second)
    assert normed.diagnostics["sd_std/2"] == pytest.approx(1000 * same.diagnostics["sd_std/2"])
    assert seen == [35] * 3


def test_diagnostics_of_a_diversity_that_reverses_the_ranking():
    """S_D = -S_S: every later sub-query takes the lowest S_S, so each of its picks is one that
    S_S + lambda1 S_C alone would not have taken."""
    s_s = torch.arange(10, dtype=torch.float32)  # position 9 is the most novel
    s_c = -torch.arange(10, dtype=torch.float32)
    calls = []

    def reverse(picked, remaining):
        calls.append((picked.tolist(), remaining.tolist()))
        return -s_s[remaining]

    got = scoring.run_subqueries(s_s, s_c, [2, 2, 2], 0.0, 2.0, reverse)
    assert got.picked.tolist() == [9, 8, 0, 1, 2, 3]  # score = S_S - 2 S_S = -S_S
    assert calls[1] == ([9, 8, 0, 1], [2, 3, 4, 5, 6, 7])
    d = got.diagnostics
    assert d["sd_changed"] == 4.0  # 0, 1, 2, 3 are not in the top 6 (9 .. 4) of S_S
    assert d["sd_finetune_changed"] == 4.0  # with S_D = S_S the query is 9 .. 4 as well
    assert d["ss_std"] == pytest.approx(math.sqrt(99 / 12))  # population std of 0..9
    assert d["sc_std"] == pytest.approx(math.sqrt(99 / 12))
    assert d["score_ss_spearman"] == pytest.approx(1.0)
    assert d["score_sc_spearman"] == pytest.approx(-1.0)
    assert d["sd_std/2"] == pytest.approx(math.sqrt(63 / 12))  # -S_S over the 8 remaining
    assert d["sd_std/3"] == pytest.approx(math.sqrt(35 / 12))
    for k in (2, 3):
        assert d[f"sd_ss_spearman/{k}"] == pytest.approx(-1.0)
        assert d[f"score_sd_spearman/{k}"] == pytest.approx(1.0)
    assert d["sd_ss_spearman"] == pytest.approx(-1.0)
    assert "sd_std/1" not in d


def test_diagnostics_without_s_d_report_no_change():
    gen = torch.Generator().manual_seed(1)
    s_s, s_c = torch.randn(50, generator=gen), torch.randn(50, generator=gen)

    def shuffle(picked, remaining):
        return torch.randn(remaining.numel(), generator=gen)

    for sizes, lambda2 in (([10], 1.0), ([5, 5], 0.0)):
        got = scoring.run_subqueries(s_s, s_c, sizes, 0.5, lambda2, shuffle)
        assert got.diagnostics["sd_changed"] == 0.0
        assert torch.equal(got.picked, scoring.top_n(s_s + 0.5 * s_c, 10))
    assert "sd_ss_spearman" not in scoring.run_subqueries(s_s, s_c, [10], 0.5, 1.0).diagnostics
    # the same as select_subqueries, which returns only the picks
    with_sd = scoring.run_subqueries(s_s, s_c, [4, 3, 3], 0.5, 1.0, lambda p, r: -s_s[r])
    assert torch.equal(
        with_sd.picked,
        scoring.select_subqueries(s_s, s_c, [4, 3, 3], 0.5, 1.0, lambda p, r: -s_s[r]),
    )
    assert with_sd.diagnostics["sd_changed"] > 0
    assert with_sd.diagnostics["sd_finetune_changed"] > 0
    # a fine-tune that changes nothing: S_D = S_S counts S_S twice, but moves no pick of its own
    unmoved = scoring.run_subqueries(s_s, s_c, [4, 3, 3], 0.5, 1.0, lambda p, r: s_s[r])
    assert unmoved.diagnostics["sd_finetune_changed"] == 0.0
    assert unmoved.diagnostics["sd_ss_spearman"] == pytest.approx(1.0)
    assert unmoved.diagnostics["sd_changed"] > 0  # the extra weight on S_S alone changes picks


def test_run_subqueries_gives_each_pick_its_scores_at_its_subquery():
    gen = torch.Generator().manual_seed(3)
    s_s, s_c = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    s_d_seen = {}

    def diversity(picked, remaining):
        s_d = torch.randn(remaining.numel(), generator=gen)
        s_d_seen[picked.numel()] = (remaining, s_d)
        return s_d

    sel = scoring.run_subqueries(s_s, s_c, [4, 3, 3], 0.5, 2.0, diversity)
    got = sel.pick_scores
    assert torch.equal(got["s_s"], s_s[sel.picked]) and torch.equal(got["s_c"], s_c[sel.picked])
    assert got["subquery"].tolist() == [1.0] * 4 + [2.0] * 3 + [3.0] * 3
    assert torch.isnan(got["s_d"][:4]).all()
    assert torch.allclose(got["score"][:4], s_s[sel.picked[:4]] + 0.5 * s_c[sel.picked[:4]])
    for start, (remaining, s_d) in ((4, s_d_seen[4]), (7, s_d_seen[7])):
        picks = sel.picked[start : start + 3]
        where = [remaining.tolist().index(p) for p in picks.tolist()]
        assert torch.equal(got["s_d"][start : start + 3], s_d[where])
        expected = s_s[picks] + 0.5 * s_c[picks] + 2.0 * s_d[where]
        assert torch.allclose(got["score"][start : start + 3], expected)


def _diag(ss, sc, sd=None, sd_ss=None):
    diag = {"score_ss_spearman": ss, "score_sc_spearman": sc}
    if sd is not None:
        diag.update({"score_sd_spearman/2": sd[0], "score_sd_spearman/3": sd[1]})
        diag["sd_ss_spearman"] = sd_ss
    return diag


def test_dominant_terms_names_the_term_that_ranks_the_query_alone():
    found = scoring.dominant_terms(_diag(0.6, 0.97), 1.0, 0.0, "none")
    assert [(d.term, d.spearman, d.other) for d in found] == [("S_C", 0.97, 0.6)]
    assert "lower lambda1 (now 1)" in found[0].advice and "score_norm: rank" in found[0].advice
    found = scoring.dominant_terms(_diag(0.98, 0.5), 0.01, 0.0, "rank")
    assert [d.term for d in found] == ["S_S"]
    assert "raise lambda1 (now 0.01)" in found[0].advice and "score_norm" not in found[0].advice
    found = scoring.dominant_terms(_diag(0.8, 0.8, sd=(0.99, 0.97), sd_ss=0.2), 1.0, 2.0, "none")
    assert [d.term for d in found] == ["S_D"] and found[0].spearman == pytest.approx(0.98)
    assert "lower lambda2 (now 2)" in found[0].advice


@pytest.mark.parametrize(
    "diag, lambda1, lambda2",
    [
        (_diag(0.97, 0.96), 1.0, 0.0),  # S_S and S_C agree: neither decides alone
        (_diag(1.0, 0.4), 0.0, 0.0),  # S_S is the only weighted term
        (_diag(0.6, 0.94), 1.0, 0.0),  # below the threshold
        (_diag(0.6, 0.7, sd=(0.99, 0.99), sd_ss=0.97), 1.0, 1.0),  # S_D agrees with S_S
        (_diag(0.6, 0.7, sd=(0.99, 0.99), sd_ss=0.2), 1.0, 0.0),  # S_D not weighted
        (_diag(math.nan, math.nan), 1.0, 0.0),  # a constant score: no correlation
    ],
)
def test_dominant_terms_stays_quiet_where_no_term_decides_alone(diag, lambda1, lambda2):
    assert scoring.dominant_terms(diag, lambda1, lambda2, "none") == []
