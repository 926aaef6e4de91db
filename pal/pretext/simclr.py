"""SimCLR: PAL's pretext task for semantic segmentation (Section 3.1, Eq. 2; Section 4;
Table 2), as decided in ``PAL-METHOD.md``.

The scoring network is a :class:`SegScoringNet`: a :class:`pal.segnets.SegNet` (its DeepLabv3
head is the pixel-wise classification head ``h``) with a SimCLR projection head ``g`` on its
pooled bottleneck embedding.

- **train** on ``D_L``: pixel-wise cross-entropy (ignore label respected) plus SimCLR's
  NT-Xent on two random views of each image;
- **score** the pool once, eval mode: ``S_S = -cos(g(v_1), g(v_2))`` of two views drawn from
  ``(query seed, image index)`` (:func:`pal.segmentation.seeded_views`, so a score never depends
  on the batch), and ``S_C`` the pixel-wise ``-KL(U || h(x))`` averaged over the image (Eq. 3);
  one encoder pass of the image and both views per chunk;
- **fine-tune** (sub-queries): a copy of ``g`` (``finetune_scope=head``, on the cached
  embeddings of both views) or of the whole network (``all``) is fine-tuned with NT-Xent on the
  query so far, and ``S_D`` is ``S_S`` under it. The paper's Cityscapes setting is
  lambda1 = 0.5, lambda2 = 0 (no fine-tune).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pal.placement import take
from pal.pretext.base import DiversityFn, Finetuner, LossFn, PoolScores, Pretext, register_pretext
from pal.rng import derive_seed
from pal.segmentation import nt_xent, pixel_kl_uniform_score, seeded_views, simclr_score
from pal.segnets import SegNet, build_segnet
from pal.training import (
    Normalizer,
    augment_with_masks,
    eval_chunk,
    fit,
    pixel_cross_entropy,
)

if TYPE_CHECKING:
    from pal.strategies.base import QueryContext

PROJECTION_DIM = 128  # SimCLR's projection output


class SegScoringNet(nn.Module):
    """``segnet`` (pixel class head ``h``) + SimCLR projection head ``g`` (2-layer MLP).

    ``forward_all(images [B, C, H, W], views [2B, C, H, W]) -> (logits [B, K, H, W],
    z [2B, PROJECTION_DIM])`` runs the encoder once on all ``3B`` images.
    """

    def __init__(self, segnet: SegNet):
        super().__init__()
        self.segnet = segnet
        c = segnet.encoder.out_channels
        self.projection = nn.Sequential(
            nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, PROJECTION_DIM)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottleneck ``[B, c, h, w]`` and its spatial mean ``[B, c]``."""
        feats = self.segnet.bottleneck(x)
        return feats, feats.mean(dim=(2, 3))

    def forward_all(
        self, images: torch.Tensor, views: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        feats, pooled = self.encode(torch.cat([images, views]))
        logits = self.segnet.head(feats[:b])
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits, self.projection(pooled[b:])


@register_pretext("simclr")
class SimCLRPretext(Pretext):
    """SimCLR's contrastive pretext (Eq. 2) with a pixel-wise class head (Eq. 3), for
    segmentation."""

    tasks = ("segmentation",)

    def network(self, ctx: QueryContext) -> SegScoringNet:
        """``SegScoringNet`` on the ``scoring_backbone`` encoder."""
        segnet = build_segnet(ctx.config.scoring_backbone, ctx.x.shape[1], ctx.num_classes)
        return SegScoringNet(segnet)

    def training_loss(
        self,
        net: SegScoringNet,
        ctx: QueryContext,
        generator: torch.Generator,
        compile: bool = False,
    ) -> LossFn:
        """Pixel cross-entropy of the (cropped/flipped) batch against its masks ``uint8
        [B, H, W]`` (255 = ignore) plus NT-Xent at ``simclr_temperature`` on two fresh views of
        each image ``[2B, C, H, W]`` (new views every step: a view seed drawn from ``generator``
        once, here, and a step counter)."""
        x, masks = ctx.x[ctx.labeled], ctx.labels[ctx.labeled]  # uint8 [L, C, H, W], [L, H, W]
        normalize, augment_mode = ctx.normalize, ctx.augment_mode
        temperature = ctx.config.simclr_temperature
        forward = torch.compile(net.forward_all) if compile else net.forward_all
        view_seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        steps = itertools.count()

        def loss(pos: torch.Tensor) -> torch.Tensor:
            batch = take(x, pos)
            images, targets = augment_with_masks(batch, masks[pos], augment_mode, generator)
            v1, v2 = seeded_views(normalize(batch), pos + len(x) * next(steps), view_seed)
            logits, z = forward(normalize(images), torch.cat([v1, v2]))
            b = pos.numel()
            return pixel_cross_entropy(logits, targets) + nt_xent(z[:b], z[b:], temperature)

        return loss

    def score(self, net: SegScoringNet, ctx: QueryContext, keep: bool = False) -> PoolScores:
        """``S_S``, ``S_C`` of ``ctx.unlabeled`` from the views of ``derive_seed(ctx.seed,
        "views")`` (see :func:`score_pool`); with ``keep`` the views' embeddings
        ``[U, 2, c]``."""
        pool = ctx.unlabeled
        batch_size, view_seed = ctx.config.eval_batch_size, view_seed_of(ctx)
        return score_pool(net, ctx.x[pool], pool, ctx.normalize, batch_size, view_seed, keep)

    def finetuner(self, net: SegScoringNet, scores: PoolScores, ctx: QueryContext) -> DiversityFn:
        """A :class:`ContrastiveFinetuner` of the projection head (``scores.features`` kept) or
        of the whole network."""
        return ContrastiveFinetuner(net, scores.features, ctx)


def view_seed_of(ctx: QueryContext) -> int:
    """The seed of the scoring views of a query: ``derive_seed(ctx.seed, "views")``."""
    return derive_seed(ctx.seed, "views")


@torch.inference_mode()
def score_pool(
    net: SegScoringNet,
    x: torch.Tensor,
    index: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    seed: int,
    keep_embeddings: bool = False,
    with_s_c: bool = True,
) -> PoolScores:
    """``S_S`` (Eq. 2, sign as decided) and ``S_C`` (Eq. 3, pixel-wise) ``[U]`` of ``x uint8
    [U, C, H, W]``, whose dataset indices ``index [U]`` (with ``seed``) decide the two views.

    ``keep_embeddings``: also the two views' pooled bottleneck embeddings ``[U, 2, c]`` (as
    ``features``); ``with_s_c=False``: ``S_S`` alone (``s_c`` empty), without the image's own
    encoder pass.
    """
    net.eval()
    s_s, s_c, embs = [], [], []
    n = eval_chunk(net.segnet, x, batch_size, passes=3)
    for xs, idx in zip(x.split(n), index.split(n), strict=True):
        b = xs.shape[0]
        images = normalize(xs)
        v1, v2 = seeded_views(images, idx, seed)
        # the image itself only for S_C; then the views start at position o = b
        o = b if with_s_c else 0
        feats, pooled = net.encode(torch.cat([images, v1, v2] if with_s_c else [v1, v2]))
        z = net.projection(pooled[o:]).float()
        s_s.append(simclr_score(z[:b], z[b:]))
        if with_s_c:  # h(x): the logits at the image's pixels, as the network outputs them
            logits = F.interpolate(
                net.segnet.head(feats[:b]), xs.shape[-2:], mode="bilinear", align_corners=False
            )
            s_c.append(pixel_kl_uniform_score(logits))
        if keep_embeddings:
            embs.append(torch.stack([pooled[o : o + b], pooled[o + b :]], dim=1))
    return PoolScores(
        torch.cat(s_s),
        torch.cat(s_c) if with_s_c else torch.empty(0),
        torch.cat(embs) if keep_embeddings else None,
    )


class ContrastiveFinetuner(Finetuner):
    """The copy of ``g`` (or of the whole scoring network) fine-tuned with NT-Xent on the query
    so far (Section 3.3): made once per query, trained on from sub-query to sub-query, or copied
    afresh before each one (``finetune_start=restart``, see :class:`Finetuner`); plain SGD at
    ``finetune_lr_factor * lr_scoring`` for ``finetune_epochs`` epochs.

    ``embeddings [U, 2, c]`` (``finetune_scope=head``): the projection head alone moves, on the
    cached embeddings of the scoring views; ``None``: everything but the class head moves, on
    fresh views of the images (seed ``view seed + step``), and ``S_D`` re-encodes the scoring
    views.
    """

    def __init__(self, net: SegScoringNet, embeddings: torch.Tensor | None, ctx: QueryContext):
        super().__init__(net.projection if embeddings is not None else net, embeddings, ctx)
        self.view_seed = view_seed_of(ctx)

    def __call__(self, picked: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """Fine-tune on ``picked`` (positions in the pool), then ``S_D [R]`` of ``remaining``."""
        gen = self.next_generator()
        temperature = self.cfg.simclr_temperature
        if self.features is not None:
            head, emb = self.model, self.features[picked]  # [m, 2, c]

            def head_loss(pos: torch.Tensor) -> torch.Tensor:
                return nt_xent(head(emb[pos, 0]), head(emb[pos, 1]), temperature)

            fit(head, len(emb), head_loss, self.spec, gen, phase="finetune")
            with torch.inference_mode():
                rest = self.features[remaining]
                return simclr_score(head(rest[:, 0]), head(rest[:, 1]))

        net, ctx = self.model, self.ctx
        index = ctx.unlabeled[picked]
        x = ctx.x[index]
        params = [p for name, p in net.named_parameters() if not name.startswith("segnet.head")]

        def net_loss(pos: torch.Tensor) -> torch.Tensor:
            seed = self.view_seed + self.step
            v1, v2 = seeded_views(ctx.normalize(take(x, pos)), index[pos], seed)
            _, pooled = net.encode(torch.cat([v1, v2]))
            z = net.projection(pooled)
            return nt_xent(z[: pos.numel()], z[pos.numel() :], temperature)

        fit(net, len(x), net_loss, self.spec, gen, params=params, phase="finetune")
        rest = ctx.unlabeled[remaining]
        batch_size = self.cfg.eval_batch_size
        return score_pool(
            net, ctx.x[rest], rest, ctx.normalize, batch_size, self.view_seed, with_s_c=False
        ).s_s
