"""PAL: Pretext-based Active Learning (Algorithm 1), as decided in ``PAL-METHOD.md``.

One query:

1. train a scoring network (rotation head ``g_phi`` + class head ``h_psi``) from scratch on
   ``D_L``, loss = rotation CE + class CE;
2. score the unlabeled pool once, all four rotations of a batch in one forward pass:
   ``S_S`` (Eq. 1) and ``S_C`` (Eq. 3, from the 0-degree pass);
3. split the query into ``K`` sub-queries; the first takes the top ``S_S + lambda1 S_C``; before
   each later one a copy ``phi'`` of the rotation model (made once per query) is fine-tuned on
   everything chosen so far with the rotation loss only, ``S_D`` is ``S_S`` under ``phi'`` on the
   still-unchosen samples, and the top ``S_S + lambda1 S_C + lambda2 S_D`` (Eq. 4) are taken.

With ``finetune_scope=head`` the body is frozen during fine-tuning, so the body's features of the
rotated pool ``[U, 4, d]`` are computed once and every fine-tune and re-score runs on the linear
rotation head alone. ``lambda2 = 0`` (or ``K = 1``) runs no fine-tune at all.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pal import scoring
from pal.config import ConfigError
from pal.models import ScoringNet, build_backbone
from pal.rng import seeded_init
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.strategies.pal_segmentation import choose_segmentation
from pal.training import FitSpec, Normalizer, ProgressFn, augment, eval_chunks, fit


@dataclasses.dataclass
class PoolScores:
    """Scores of the pool ``[U]`` and, when kept, the body's features ``[U, 4, d]``."""

    s_s: torch.Tensor
    s_c: torch.Tensor
    features: torch.Tensor | None = None


def train_scoring_net(
    net: ScoringNet,
    x: torch.Tensor,
    y: torch.Tensor,
    normalize: Normalizer,
    spec: FitSpec,
    augment_mode: str,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
) -> None:
    """Multi-task training on ``D_L``: every image at 0/90/180/270 degrees for the rotation head,
    the 0-degree image with its oracle label for the class head (Algorithm 1, first loop).

    Args:
        x: ``uint8 [L, C, H, W]``; y: ``int64 [L]``.
    """

    forward = spec.forward(net)

    def loss_fn(pos: torch.Tensor) -> torch.Tensor:
        b = pos.numel()
        rotated = scoring.rotations(normalize(augment(x[pos], augment_mode, generator)))
        rot_logits, class_logits = forward(rotated)  # [4B, 4], [4B, K]
        rot_loss = F.cross_entropy(rot_logits, scoring.rotation_labels(b, x.device))
        class_loss = F.cross_entropy(class_logits.view(b, 4, -1)[:, 0], y[pos])
        return rot_loss + class_loss

    fit(net, len(x), loss_fn, spec, generator, progress=progress, phase="scoring")


@torch.inference_mode()
def score_pool(
    net: ScoringNet,
    x: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    keep_features: bool = False,
) -> PoolScores:
    """``S_S`` and ``S_C`` of ``x uint8 [U, C, H, W]`` with four forward passes per image (one
    batched pass of the four rotations); no augmentation, eval mode."""
    net.eval()
    s_s, s_c, feats = [], [], []
    for chunk in eval_chunks(x, batch_size, passes=4):
        b = chunk.shape[0]
        z = net.backbone(scoring.rotations(normalize(chunk)))  # [4b, d]
        rot_probs = torch.softmax(net.rotation_head(z).float(), dim=1).view(b, 4, 4)
        class_logp = F.log_softmax(net.class_head(z.view(b, 4, -1)[:, 0]).float(), dim=1)
        s_s.append(scoring.rotation_score(rot_probs))
        s_c.append(scoring.kl_uniform_score(class_logp))
        if keep_features:
            feats.append(z.view(b, 4, -1))
    return PoolScores(torch.cat(s_s), torch.cat(s_c), torch.cat(feats) if keep_features else None)


@torch.inference_mode()
def head_rotation_score(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``S_S`` from cached body features ``[M, 4, d]`` through a rotation head -> ``[M]``."""
    m = features.shape[0]
    probs = torch.softmax(head(features.flatten(0, 1)).float(), dim=1).view(m, 4, 4)
    return scoring.rotation_score(probs)


@register_strategy("pal")
class PALStrategy(Strategy):
    """Scoring network + hybrid score + sub-queries with self-supervised fine-tuning (Eq. 1-4).

    For segmentation the pretext task is SimCLR's instead of rotation prediction
    (:mod:`pal.strategies.pal_segmentation`, Section 3.1 Eq. 2).
    """

    tasks = ("classification", "segmentation")

    @classmethod
    def check_config(
        cls, config, query_size: int, image_hw: tuple[int, int], task: str = "classification"
    ) -> None:
        if task == "classification" and image_hw[0] != image_hw[1]:
            raise ConfigError(
                f"image_size: PAL's rotation task needs square images, got {image_hw}; "
                "set image_size to resize"
            )
        if config.rounds > 0 and config.subqueries > query_size:
            raise ConfigError(
                f"subqueries: must be <= the query size ({query_size}), got {config.subqueries}"
            )

    def choose(self, ctx: QueryContext, n: int) -> Query:
        cfg = self.config
        if ctx.task == "segmentation":
            return choose_segmentation(cfg, ctx, n)
        channels, h, w = ctx.x.shape[1:]
        with seeded_init(ctx.seed, "scoring-init"):
            net = ScoringNet(
                build_backbone(cfg.scoring_backbone, channels, (h, w)), ctx.num_classes
            )
        net.to(ctx.device, memory_format=ctx.normalize.memory_format)
        train_scoring_net(
            net,
            ctx.x[ctx.labeled],
            ctx.labels[ctx.labeled],
            ctx.normalize,
            FitSpec.from_config(cfg, "scoring"),
            ctx.augment_mode,
            ctx.generator("scoring"),
            ctx.progress,
        )
        sizes = scoring.subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]
        use_head = cfg.finetune_scope == "head" and len(sizes) > 1
        pool = ctx.unlabeled
        scores = score_pool(net, ctx.x[pool], ctx.normalize, cfg.eval_batch_size, use_head)
        metrics = scoring.table1_correlations(scores.s_s, scores.s_c)

        finetuner = _Finetuner(net, scores.features, ctx, cfg) if len(sizes) > 1 else None
        diversity = finetuner.diversity_score if finetuner is not None else None
        picked = scoring.select_subqueries(
            scores.s_s, scores.s_c, sizes, cfg.lambda1, cfg.lambda2, diversity
        )
        return Query(pool[picked], metrics)


class _Finetuner:
    """The copy ``phi'`` of the rotation model, fine-tuned on the query so far (Section 3.3).

    Made once per query and trained on from sub-query to sub-query (Algorithm 1); plain SGD at
    ``finetune_lr_factor * lr_scoring`` for ``finetune_epochs`` epochs, rotation loss only.
    """

    def __init__(self, net: ScoringNet, features, ctx: QueryContext, cfg):
        self.ctx, self.cfg = ctx, cfg
        self.features = features  # [U, 4, d] for scope "head", else None
        self.model = copy.deepcopy(net.rotation_head if features is not None else net)
        self.step = 0
        self.spec = FitSpec.finetune(cfg)

    def diversity_score(self, picked: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """Fine-tune on ``picked`` (positions in the pool), then ``S_D [R]`` of ``remaining``."""
        self.step += 1
        gen = self.ctx.generator("finetune", self.step)
        if self.features is not None:
            feats = self.features[picked].flatten(0, 1)  # [4m, d]
            targets = scoring.rotation_labels(picked.numel(), feats.device)
            head = self.model
            spec = dataclasses.replace(self.spec, batch_size=4 * self.spec.batch_size)

            def head_loss(pos: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(head(feats[pos]), targets[pos])

            fit(head, feats.shape[0], head_loss, spec, gen, phase="finetune")
            return head_rotation_score(head, self.features[remaining])

        net = self.model
        x = self.ctx.x[self.ctx.unlabeled[picked]]
        params = [p for name, p in net.named_parameters() if not name.startswith("class_head")]

        def net_loss(pos: torch.Tensor) -> torch.Tensor:
            rot_logits, _ = net(scoring.rotations(self.ctx.normalize(x[pos])))
            return F.cross_entropy(rot_logits, scoring.rotation_labels(pos.numel(), x.device))

        fit(net, x.shape[0], net_loss, self.spec, gen, params=params, phase="finetune")
        pool_x = self.ctx.x[self.ctx.unlabeled[remaining]]
        return score_pool(net, pool_x, self.ctx.normalize, self.cfg.eval_batch_size).s_s
