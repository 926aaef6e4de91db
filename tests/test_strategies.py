"""Contract tests over every registered strategy, and PAL's selection rules."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

import pal
from pal import scoring
from pal.models import build_backbone
from pal.pretext import PRETEXTS, PoolScores, Pretext, pretext_for, rotation, simclr
from pal.strategies import STRATEGIES, PoolExhaustedError, build_strategy
from pal.strategies.pal import DominanceWarning
from pal.training import Normalizer, eval_chunk
from tests.helpers import make_context

SMALL = pal.Config(epochs_scoring=2, subqueries=3, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def small_ctx(digits):
    return lambda config, seed=0: make_context(
        digits, config, range(0, 60), range(60, 260), seed=seed
    )


@pytest.mark.parametrize("name", pal.list_strategies())
class TestStrategyContract:
    def test_returns_n_unique_indices_from_the_unlabeled_pool(self, name, small_ctx):
        ctx = small_ctx(SMALL.replace(strategy=name))
        query = build_strategy(ctx.config).query(ctx, 15)
        chosen = query.indices.tolist()
        assert len(chosen) == 15
        assert len(set(chosen)) == 15
        assert set(chosen) <= set(ctx.unlabeled.tolist())
        assert all(isinstance(v, float) for v in query.metrics.values())

    def test_deterministic_for_a_seed(self, name, small_ctx):
        config = SMALL.replace(strategy=name)
        first = build_strategy(config).query(small_ctx(config, seed=7), 12).indices
        second = build_strategy(config).query(small_ctx(config, seed=7), 12).indices
        assert torch.equal(first, second)

    def test_whole_pool_can_be_taken(self, name, digits):
        ctx = make_context(digits, SMALL.replace(strategy=name), range(60), range(60, 66))
        chosen = build_strategy(ctx.config).query(ctx, 6).indices
        assert sorted(chosen.tolist()) == list(range(60, 66))

    def test_exhausted_pool_raises(self, name, digits):
        ctx = make_context(digits, SMALL.replace(strategy=name), range(60), range(60, 65))
        with pytest.raises(PoolExhaustedError, match="pool of 5"):
            build_strategy(ctx.config).query(ctx, 6)


def test_registry_lists_the_builtin_strategies_and_rejects_duplicates():
    assert {"random", "entropy", "pal"} <= set(pal.list_strategies())
    with pytest.raises(ValueError, match="already registered"):
        STRATEGIES.register("pal")(object)
    with pytest.raises(pal.ConfigError, match=r"strategy: unknown strategy 'pall'.*'pal'"):
        STRATEGIES.get("pall")


def test_random_depends_on_the_seed(small_ctx):
    config = SMALL.replace(strategy="random")
    a = build_strategy(config).query(small_ctx(config, seed=1), 20).indices
    b = build_strategy(config).query(small_ctx(config, seed=2), 20).indices
    assert not torch.equal(a, b)


def test_entropy_picks_the_most_uncertain_predictions(digits):
    ctx = make_context(digits, SMALL.replace(strategy="entropy"), range(10), range(10, 30))

    class Fixed(nn.Module):  # confident on even positions, uniform on odd ones
        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[::2, 0] = 20.0
            return logits

    ctx.task_model = Fixed()
    chosen = build_strategy(ctx.config).query(ctx, 10).indices
    assert sorted(chosen.tolist()) == list(range(11, 30, 2))


# ----------------------------------------------------------------------------- PAL
def novel_pool(digits, n_novel=20, seed=0):
    """Digits plus ``n_novel`` images of pure noise appended at the end of the training split."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n_novel, *digits.x_train.shape[1:]), generator=gen)
    data = pal.ImageData(
        name="digits+noise",
        x_train=torch.cat([digits.x_train, noise.to(torch.uint8)]),
        y_train=torch.cat([digits.y_train, torch.zeros(n_novel, dtype=torch.int64)]),
        x_test=digits.x_test,
        y_test=digits.y_test,
        classes=digits.classes,
        default_augment="crop",
    )
    novel = range(len(digits.x_train), len(data.x_train))
    return data, list(novel)


@pytest.mark.parametrize(
    ("lambda1", "lambda2", "scope"), [(0.0, 0.0, "head"), (1.0, 1.0, "head"), (1.0, 1.0, "all")]
)
def test_pal_chooses_samples_far_from_the_labeled_pool(digits, lambda1, lambda2, scope):
    """Highest score wins: with D_L holding only digits 0-7, the 8s and 9s are queried first.

    They are 60 of a pool of 360 (17%); picking the lowest scores would choose almost none.
    """
    y = digits.y_train
    seen, unseen = (y < 8).nonzero().squeeze(1), (y >= 8).nonzero().squeeze(1)[:60]
    config = pal.Config(
        epochs_scoring=15,
        lambda1=lambda1,
        lambda2=lambda2,
        subqueries=4,
        finetune_scope=scope,
        batch_size=32,
    )
    ctx = make_context(digits, config, seen[:400], torch.cat([seen[400:700], unseen]))
    chosen = build_strategy(config).query(ctx, 60).indices
    assert torch.isin(chosen, unseen).float().mean() >= 0.45


def test_rotation_score_alone_prefers_noise_to_digits(digits):
    """S_S alone (lambda1 = lambda2 = 0): noise images, whose rotation cannot be told, win."""
    data, novel = novel_pool(digits)
    config = pal.Config(epochs_scoring=15, lambda1=0.0, lambda2=0.0, batch_size=32)
    ctx = make_context(data, config, range(400), list(range(400, 600)) + novel)
    chosen = set(build_strategy(config).query(ctx, len(novel)).indices.tolist())
    assert len(chosen & set(novel)) >= 0.5 * len(novel)  # 20 of 220: random would get ~2


PAL_DIAGNOSTICS = {"ss_std", "sc_std", "score_ss_spearman", "score_sc_spearman", "sd_changed"}


def test_pal_reports_the_table1_correlations_and_the_terms_diagnostics(digits):
    config = SMALL.replace(epochs_scoring=3)  # K = 3: two fine-tunes
    ctx = make_context(digits, config, range(100), range(100, 400))
    query = build_strategy(config).query(ctx, 30)
    metrics = {k: v for k, v in query.metrics.items() if not k.startswith(("scoring/", "dom"))}
    assert {k: v for k, v in query.metrics.items() if k.startswith("dominant/")}.keys() == {
        "dominant/S_S",
        "dominant/S_C",
        "dominant/S_D",
    }
    per_subquery = {f"{name}/{k}" for k in (2, 3) for name in ("sd_std", "sd_ss_spearman")}
    per_subquery |= {"score_sd_spearman/2", "score_sd_spearman/3"}
    with_sd = {"sd_ss_spearman", "sd_finetune_changed"}
    assert set(metrics) == {"ss_sc_pearson", "ss_sc_spearman"} | (
        PAL_DIAGNOSTICS | with_sd | per_subquery
    )
    correlations = [v for k, v in metrics.items() if "spearman" in k or "pearson" in k]
    assert all(-1.0 <= v <= 1.0 and not math.isnan(v) for v in correlations)
    assert metrics["ss_std"] > 0 and metrics["sc_std"] > 0 and metrics["sd_std/2"] > 0
    assert metrics["sd_ss_spearman"] == pytest.approx(
        (metrics["sd_ss_spearman/2"] + metrics["sd_ss_spearman/3"]) / 2
    )
    assert metrics["sd_changed"] in range(0, 21)  # at most the 20 picks after the first 10
    assert metrics["sd_finetune_changed"] in range(0, 21)
    assert all(isinstance(v, float) for v in metrics.values())


def test_pal_without_s_d_reports_no_change(digits):
    config = SMALL.replace(epochs_scoring=2, lambda2=0.0)
    ctx = make_context(digits, config, range(60), range(60, 200))
    query = build_strategy(config).query(ctx, 20)
    metrics = {k: v for k, v in query.metrics.items() if not k.startswith(("scoring/", "dom"))}
    assert set(metrics) == {"ss_sc_pearson", "ss_sc_spearman"} | PAL_DIAGNOSTICS
    assert metrics["sd_changed"] == 0.0


def test_score_norm_rank_reaches_the_query(digits, monkeypatch):
    """score_norm from the config: with rank, S_C's scale no longer sets the query."""
    scale = {"value": 1.0}
    original = rotation.score_pool

    def scaled(*args, **kwargs):
        scores = original(*args, **kwargs)
        scores.s_c = scores.s_c * scale["value"]
        return scores

    monkeypatch.setattr(rotation, "score_pool", scaled)
    picks = {}
    for norm in ("none", "rank"):
        config = SMALL.replace(epochs_scoring=2, lambda2=0.0, score_norm=norm)
        for value in (1.0, 1000.0):
            scale["value"] = value
            ctx = make_context(digits, config, range(60), range(60, 200))
            picks[norm, value] = build_strategy(config).query(ctx, 20).indices
    assert torch.equal(picks["rank", 1.0], picks["rank", 1000.0])
    assert not torch.equal(picks["none", 1.0], picks["none", 1000.0])


def test_lambda2_zero_runs_no_finetune(digits, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("fine-tuning ran although lambda2 = 0")

    monkeypatch.setattr(rotation.RotationPretext, "finetuner", fail)
    config = SMALL.replace(lambda2=0.0, subqueries=5)
    ctx = make_context(digits, config, range(60), range(60, 200))
    assert build_strategy(config).query(ctx, 20).indices.numel() == 20


def test_head_rotation_score_hand_values():
    """S_D is S_S under the fine-tuned head (Section 3.3), from cached features [M, 4, d]."""
    head = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4) * math.log(3.0))
    feats = torch.eye(4).expand(2, 4, 4).clone()  # rotation i has feature e_i
    feats[1] = 0.0  # no signal: uniform rotation probabilities
    # sample 0: p(correct) = 3 / (3 + 1 + 1 + 1) = 0.5 per rotation -> S = -2
    got = rotation.head_rotation_score(head, feats)
    assert got.tolist() == pytest.approx([-2.0, -1.0])


def test_subqueries_bring_diversity(digits):
    """S_D: after fine-tuning on the first sub-query, its near-duplicates stop looking novel.

    The pool holds 10 copies each of two noise images A and B. Without S_D the query of 10 is
    the 10 highest-scored copies; with S_D and a strong fine-tune the second sub-query moves to
    the other image.
    """
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.randint(0, 256, (1, 1, 8, 8), generator=gen, dtype=torch.uint8) for _ in "ab")
    copies = torch.cat([a.expand(10, -1, -1, -1), b.expand(10, -1, -1, -1)])
    data = pal.ImageData(
        name="dups",
        x_train=torch.cat([digits.x_train[:300], copies]),
        y_train=torch.cat([digits.y_train[:300], torch.zeros(20, dtype=torch.int64)]),
        x_test=digits.x_test,
        y_test=digits.y_test,
        classes=digits.classes,
        default_augment="crop",
    )
    pool = list(range(300, 320))
    base = pal.Config(epochs_scoring=10, lambda1=0.0, subqueries=2, batch_size=32)

    def groups(config):
        ctx = make_context(data, config, range(300), pool)
        chosen = build_strategy(config).query(ctx, 10).indices.tolist()
        return sum(i < 310 for i in chosen), sum(i >= 310 for i in chosen)

    without = groups(base.replace(lambda2=0.0))
    with_sd = groups(base.replace(lambda2=5.0, finetune_epochs=30, finetune_lr_factor=20.0))
    assert 10 in without  # ties of identical copies: all ten from one image
    assert min(with_sd) >= 4  # the second sub-query came from the other image


def test_check_config_rejects_more_subqueries_than_the_query():
    with pytest.raises(pal.ConfigError, match=r"subqueries: must be <= the query size \(3\)"):
        STRATEGIES.get("pal").check_config(SMALL.replace(subqueries=5), 3, (8, 8))
    STRATEGIES.get("random").check_config(SMALL.replace(subqueries=5), 3, (8, 8))


def test_scoring_uses_four_passes_per_image(digits, monkeypatch):
    """One batched pass of the four rotations: the class head reads the 0-degree features."""
    x = digits.x_train[:16]
    net = pal.models.ScoringNet(build_backbone("cnn", 1, (8, 8)), 10)
    calls = []
    eval_chunk(net, x, 64, passes=4)  # the chunk rule's one-image probe, before the count
    original = net.backbone.forward
    monkeypatch.setattr(net.backbone, "forward", lambda t: calls.append(len(t)) or original(t))
    scores = rotation.score_pool(net, x, Normalizer(x), batch_size=64)
    assert sum(calls) == 4 * 16
    assert scores.s_s.shape == scores.s_c.shape == (16,)
    assert ((scores.s_s >= -4) & (scores.s_s <= 0)).all() and (scores.s_c <= 1e-6).all()
    # the same S_S from explicit per-rotation probabilities
    with torch.no_grad():
        net.eval()
        rot_logits, _ = net(scoring.rotations(Normalizer(x)(x)))
    expected = scoring.rotation_score(rot_logits.softmax(1).view(16, 4, 4))
    assert torch.allclose(scores.s_s, expected, atol=1e-5)


# ------------------------------------------------------------------ the pretext seam
def test_pretext_for_picks_the_registered_pretext_of_the_task():
    assert isinstance(pretext_for("classification"), rotation.RotationPretext)
    assert isinstance(pretext_for("segmentation"), simclr.SimCLRPretext)
    assert set(STRATEGIES.get("pal").tasks) == {"classification", "segmentation"}
    with pytest.raises(pal.ConfigError, match="no pretext task for 'detection'"):
        pretext_for("detection")


def test_rotation_pretext_needs_square_images():
    with pytest.raises(pal.ConfigError, match=r"rotation task needs square images, got \(8, 6\)"):
        STRATEGIES.get("pal").check_config(SMALL, 15, (8, 6), "classification")
    STRATEGIES.get("pal").check_config(SMALL, 15, (8, 6), "segmentation")  # SimCLR: any shape


class RecordingPretext(Pretext):
    """A pretext that scores by position and logs what PAL asks of it."""

    tasks = ("toy",)
    calls: list = []

    def network(self, ctx):
        self.calls.append("network")
        return nn.Linear(ctx.x[0].numel(), 1)

    def training_loss(self, net, ctx, generator, compile=False):
        x = ctx.normalize(ctx.x[ctx.labeled]).flatten(1)
        return lambda pos: net(x[pos]).square().mean()

    def train(self, net, ctx):
        self.calls.append("train")
        return super().train(net, ctx)

    def score(self, net, ctx, keep=False):
        self.calls.append(("score", keep))
        u = ctx.unlabeled.numel()
        return PoolScores(-torch.arange(u, dtype=torch.float32), torch.zeros(u))

    def finetuner(self, net, scores, ctx):
        self.calls.append("finetuner")

        def diversity(picked, remaining):
            self.calls.append(("diversity", picked.numel(), remaining.numel()))
            return torch.zeros(remaining.numel())

        return diversity


def test_pal_runs_any_registered_pretext_through_the_seam(digits, monkeypatch):
    """PAL's query is the pretext's build, train, score and finetuner, for any task it names."""
    monkeypatch.setitem(PRETEXTS._items, "recording", RecordingPretext)
    monkeypatch.setattr(RecordingPretext, "calls", [])
    assert "toy" in STRATEGIES.get("pal").tasks
    config = SMALL.replace(subqueries=3, lambda1=0.0)
    ctx = make_context(digits, config, range(40), range(40, 100))
    ctx.task = "toy"
    query = build_strategy(config).query(ctx, 9)
    assert query.indices.tolist() == list(range(40, 49))  # S_S = -position, S_D = 0
    assert {"ss_sc_pearson", "ss_sc_spearman", "sd_ss_spearman", "sd_std/3"} <= set(query.metrics)
    assert query.metrics["sd_changed"] == query.metrics["sd_finetune_changed"] == 0.0
    assert query.metrics["scoring/epoch"] == config.epochs_scoring  # the pretext's FitReport
    assert RecordingPretext.calls == [
        "network",
        "train",
        ("score", True),
        "finetuner",
        ("diversity", 3, 57),
        ("diversity", 6, 54),
    ]


# ------------------------------------------------------------------ finetune_start
def _phi_and_scores(digits, config):
    """A scoring network (phi) trained briefly, the pool's scores and the query's context."""
    ctx = make_context(digits, config, range(60), range(60, 200))
    pretext = pretext_for("classification")
    net = pretext.build(ctx)
    pretext.train(net, ctx)
    scores = pretext.score(net, ctx, keep=config.finetune_scope == "head")
    return net, scores, ctx


def _steps(finetuner, pool_size):
    """Two fine-tune steps on the first 10 then the first 20 positions; S_D of each step."""
    return [finetuner(torch.arange(m), torch.arange(m, pool_size)) for m in (10, 20)]


@pytest.mark.parametrize("scope", ["head", "all"])
def test_restart_fine_tunes_each_step_from_phi(digits, scope):
    """finetune_start=restart: S_D at step 2 is a fresh fine-tune of phi on the same picks with
    the same generator; continue's step 2 starts where step 1 ended, so it differs."""
    config = SMALL.replace(finetune_scope=scope, finetune_epochs=3, finetune_lr_factor=2.0)
    net, scores, ctx = _phi_and_scores(digits, config)
    phi_state = {k: v.clone() for k, v in net.state_dict().items()}

    def finetuner(start):
        step_ctx = dataclasses.replace(ctx, config=config.replace(finetune_start=start))
        return pretext_for("classification").finetuner(net, scores, step_ctx)

    restarted = _steps(finetuner("restart"), 140)
    fresh = finetuner("restart")
    fresh.step = 1  # the next step is 2: its generator, from a fresh copy of phi
    alone = fresh(torch.arange(20), torch.arange(20, 140))
    assert torch.equal(restarted[1], alone)
    continued = _steps(finetuner("continue"), 140)
    assert torch.equal(continued[0], restarted[0])  # step 1 starts from phi either way
    assert not torch.allclose(continued[1], restarted[1])
    for key, value in net.state_dict().items():  # phi itself never moves
        assert torch.equal(value, phi_state[key]), key


def test_restart_copies_phi_before_every_step(digits, monkeypatch):
    """A spy on the fine-tune: with restart, the model each step trains starts equal to phi."""
    config = SMALL.replace(finetune_start="restart", finetune_epochs=2, finetune_lr_factor=2.0)
    net, scores, ctx = _phi_and_scores(digits, config)
    head = net.rotation_head.weight.detach().clone()
    starts = []
    original = rotation.fit

    def spy(module, *args, **kwargs):
        starts.append(torch.equal(module.weight.detach(), head))
        return original(module, *args, **kwargs)

    monkeypatch.setattr(rotation, "fit", spy)
    finetuner = pretext_for("classification").finetuner(net, scores, ctx)
    _steps(finetuner, 140)
    finetuner(torch.arange(30), torch.arange(30, 140))
    assert starts == [True, True, True]
    starts.clear()
    continued = dataclasses.replace(ctx, config=config.replace(finetune_start="continue"))
    _steps(pretext_for("classification").finetuner(net, scores, continued), 140)
    assert starts == [True, False]


@pytest.mark.parametrize("scope", ["head", "all"])
def test_restart_query_is_deterministic_for_a_seed(small_ctx, scope):
    config = SMALL.replace(finetune_start="restart", finetune_scope=scope, lambda2=2.0)
    first = build_strategy(config).query(small_ctx(config, seed=3), 12)
    second = build_strategy(config).query(small_ctx(config, seed=3), 12)
    assert torch.equal(first.indices, second.indices)
    assert first.metrics == pytest.approx(second.metrics, nan_ok=True)


def test_a_query_ranked_by_one_term_warns_and_names_the_key(digits):
    """lambda1 = 100 puts S_C's scale over S_S's: the query says so and how to rebalance it;
    rank normalisation at lambda1 = 1 weighs the two alike and stays quiet."""
    config = SMALL.replace(epochs_scoring=10, lambda1=100.0, lambda2=0.0)
    ctx = make_context(digits, config, range(60), range(60, 260))
    with pytest.warns(DominanceWarning, match=r"ranked by S_C alone.*lower lambda1 \(now 100\)"):
        query = build_strategy(config).query(ctx, 20)
    assert query.metrics["dominant/S_C"] == 1.0 and query.metrics["dominant/S_S"] == 0.0
    assert query.metrics["score_sc_spearman"] >= 0.95 > query.metrics["score_ss_spearman"]

    balanced = config.replace(lambda1=1.0, score_norm="rank")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DominanceWarning)
        query = build_strategy(balanced).query(
            make_context(digits, balanced, range(60), range(60, 260)), 20
        )
    assert query.metrics["dominant/S_C"] == 0.0 and query.metrics["dominant/S_S"] == 0.0
