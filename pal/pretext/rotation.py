"""Rotation prediction: PAL's pretext task for classification (Section 3.1, Eq. 1 and 3).

The scoring network is a :class:`pal.models.ScoringNet`: one backbone, a rotation head
``g_phi`` and a class head ``h_psi``, both linear.

- **train** on ``D_L``: every image at 0/90/180/270 degrees for the rotation head, the
  0-degree image with its oracle label for the class head; loss = rotation CE + class CE;
- **score** the pool once, all four rotations of a batch in one forward pass (four passes per
  image): ``S_S = -sum_i g(rot_90i(x))_i`` (Eq. 1) and ``S_C = -KL(U || h(x))`` (Eq. 3, from the
  0-degree pass);
- **fine-tune** (sub-queries, Section 3.3): a copy ``phi'`` of the rotation model, rotation loss
  only, kept across the sub-queries or restarted from ``phi`` before each (``finetune_start``).
  With ``finetune_scope=head`` the body is frozen, so the body's features of the rotated pool
  ``[U, 4, d]`` are computed once and every fine-tune and re-score runs on the linear rotation
  head alone; with ``all`` everything but the class head moves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pal import scoring
from pal.config import ConfigError
from pal.models import ScoringNet, build_backbone
from pal.placement import Images, take
from pal.pretext.base import DiversityFn, Finetuner, LossFn, PoolScores, Pretext, register_pretext
from pal.training import Normalizer, augment, eval_chunk, eval_chunks, fit, map_chunks

if TYPE_CHECKING:
    from pal.strategies.base import QueryContext


@register_pretext("rotation")
class RotationPretext(Pretext):
    """Rotation prediction (Eq. 1) with a class head (Eq. 3), for classification."""

    tasks = ("classification",)

    @classmethod
    def check_config(cls, config, query_size: int, image_hw: tuple[int, int]) -> None:
        """Rotations of a non-square image change its shape: square images only."""
        if image_hw[0] != image_hw[1]:
            raise ConfigError(
                f"image_size: PAL's rotation task needs square images, got {image_hw}; "
                "set image_size to resize"
            )

    def network(self, ctx: QueryContext) -> ScoringNet:
        """``ScoringNet`` on the ``scoring_backbone``: ``[B, C, H, W] -> (rotation logits
        [B, 4], class logits [B, K])``."""
        channels, h, w = ctx.x.shape[1:]
        backbone = build_backbone(ctx.config.scoring_backbone, channels, (h, w))
        return ScoringNet(backbone, ctx.num_classes)

    def training_loss(
        self, net: ScoringNet, ctx: QueryContext, generator: torch.Generator, compile: bool = False
    ) -> LossFn:
        """Rotation CE on the four rotations of the augmented batch ``[4B]`` plus class CE on
        its 0-degree pass against the oracle's labels ``int64 [B]``.

        An image whose label is unknown (:data:`pal.data.UNKNOWN_LABEL`, -1) trains the
        rotation head only: the class CE is averaged over the batch's known labels (0 when it
        has none). That is how ``pal label`` chooses a first batch with no label at all."""
        x, y = ctx.x[ctx.labeled], ctx.labels[ctx.labeled]  # uint8 [L, C, H, W], int64 [L]
        normalize, augment_mode = ctx.normalize, ctx.augment_mode
        forward = torch.compile(net) if compile else net
        partial = bool((y < 0).any())  # one host sync per training, not per step

        def loss(pos: torch.Tensor) -> torch.Tensor:
            b = pos.numel()
            rotated = scoring.rotations(normalize(augment(take(x, pos), augment_mode, generator)))
            rot_logits, class_logits = forward(rotated)  # [4B, 4], [4B, K]
            rot_loss = F.cross_entropy(rot_logits, scoring.rotation_labels(b, x.device))
            upright, labels = class_logits.view(b, 4, -1)[:, 0], y[pos]
            if not partial:
                return rot_loss + F.cross_entropy(upright, labels)
            class_sum = F.cross_entropy(upright, labels, ignore_index=-1, reduction="sum")
            return rot_loss + class_sum / (labels >= 0).sum().clamp_min(1)

        return loss

    def validation_set(self, ctx: QueryContext) -> torch.Tensor:
        """The validation images of the classes ``D_L`` holds. The class head cannot name a class
        it never saw (one missing from the initial pool), and those images' loss grows as it
        learns the others: selected on the whole set, the network stops at an early epoch
        (MNIST with 8 and 9 missing: epoch 20 of 100, rotation accuracy 0.80 on ``D_L``)."""
        val = super().validation_set(ctx)
        known = torch.unique(ctx.labels[ctx.labeled])
        return val[torch.isin(ctx.labels[val], known)]

    def fit_metrics(self, net: ScoringNet, ctx: QueryContext) -> tuple[dict[str, float], tuple]:
        """Rotation and class accuracy of ``net`` on ``D_L`` and on the validation set
        (:func:`rotation_accuracies`); the two on ``D_L`` are its fit."""
        bs = ctx.config.eval_batch_size
        out: dict[str, float] = {}
        for split, idx in (("train", ctx.labeled), ("val", ctx.val)):
            if idx is None or idx.numel() == 0:
                continue
            rot, cls = rotation_accuracies(net, ctx.x[idx], ctx.labels[idx], ctx.normalize, bs)
            out[f"scoring/rotation_{split}_accuracy"] = rot
            out[f"scoring/class_{split}_accuracy"] = cls
        keys = ("scoring/rotation_train_accuracy", "scoring/class_train_accuracy")
        return out, tuple(k for k in keys if k in out and out[k] == out[k])  # NaN: no labels

    def score(self, net: ScoringNet, ctx: QueryContext, keep: bool = False) -> PoolScores:
        """``S_S``, ``S_C`` of ``ctx.unlabeled`` (see :func:`score_pool`); with ``keep`` the
        body's features of the four rotations ``[U, 4, d]``."""
        x = ctx.x[ctx.unlabeled]
        return score_pool(net, x, ctx.normalize, ctx.config.eval_batch_size, keep)

    def finetuner(self, net: ScoringNet, scores: PoolScores, ctx: QueryContext) -> DiversityFn:
        """A :class:`RotationFinetuner` of the rotation head (``scores.features`` kept) or of
        the whole network."""
        return RotationFinetuner(net, scores.features, ctx)


def rotation_chunk(
    net: ScoringNet, chunk: torch.Tensor, keep_features: bool = False
) -> tuple[torch.Tensor, ...]:
    """``(S_S [b], S_C [b])`` (Eq. 1, 3), and with ``keep_features`` the body's features
    ``float32 [b, 4, d]``, of a normalised chunk ``[b, C, H, W]``: one batched pass of its four
    rotations, the class head reading the 0-degree pass."""
    b = chunk.shape[0]
    z = net.backbone(scoring.rotations(chunk))  # [4b, d]
    rot_probs = torch.softmax(net.rotation_head(z).float(), dim=1).view(b, 4, 4)
    class_logp = F.log_softmax(net.class_head(z.view(b, 4, -1)[:, 0]).float(), dim=1)
    out = (scoring.rotation_score(rot_probs), scoring.kl_uniform_score(class_logp))
    return (*out, z.view(b, 4, -1).float()) if keep_features else out


@torch.inference_mode()
def score_pool(
    net: ScoringNet,
    x: Images,
    normalize: Normalizer,
    batch_size: int,
    keep_features: bool = False,
) -> PoolScores:
    """``S_S`` (Eq. 1) and ``S_C`` (Eq. 3) ``[U]`` of ``x uint8 [U, C, H, W]`` with four forward
    passes per image (:func:`rotation_chunk`); no augmentation, eval mode. ``keep_features``:
    also the body's features ``float32 [U, 4, d]``. A streamed pool may be scored by Ray Data
    (:func:`pal.training.map_chunks`)."""
    net.eval()
    if not len(x):
        empty = torch.empty(0, device=x.device)
        return PoolScores(empty, empty, empty.view(0, 4, 0) if keep_features else None)
    fn = functools.partial(rotation_chunk, keep_features=keep_features)
    outs = map_chunks(fn, net, x, normalize, batch_size, passes=4)
    return PoolScores(outs[0], outs[1], outs[2] if keep_features else None)


@torch.inference_mode()
def rotation_accuracies(
    net: ScoringNet, x: torch.Tensor, y: torch.Tensor, normalize: Normalizer, batch_size: int
) -> tuple[float, float]:
    """``(rotation accuracy, class accuracy)`` of ``net`` on ``x uint8 [N, C, H, W]`` with labels
    ``y int64 [N]``: the share of the ``4N`` rotated images whose rotation the rotation head
    names, and of the upright images of known label (``y >= 0``) whose class the class head
    names (NaN when none is known); eval mode, no augmentation."""
    net.eval()
    rot_hits = cls_hits = torch.zeros((), device=x.device)
    chunks = eval_chunks(net, x, batch_size, passes=4)
    for chunk, labels in zip(chunks, y.split(eval_chunk(net, x, batch_size, 4)), strict=True):
        b = chunk.shape[0]
        rot_logits, class_logits = net(scoring.rotations(normalize(chunk)))  # [4b, 4], [4b, K]
        rot_hits = rot_hits + (rot_logits.argmax(1) == scoring.rotation_labels(b, x.device)).sum()
        cls_hits = cls_hits + (class_logits.view(b, 4, -1)[:, 0].argmax(1) == labels).sum()
    known = int((y >= 0).sum())
    class_accuracy = float(cls_hits) / known if known else math.nan
    return float(rot_hits) / (4 * max(x.shape[0], 1)), class_accuracy


@torch.inference_mode()
def head_rotation_score(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``S_S [M]`` (Eq. 1) from cached body features ``[M, 4, d]`` through a rotation head."""
    m = features.shape[0]
    probs = torch.softmax(head(features.flatten(0, 1)).float(), dim=1).view(m, 4, 4)
    return scoring.rotation_score(probs)


class RotationFinetuner(Finetuner):
    """The copy ``phi'`` of the rotation model, fine-tuned on the query so far (Section 3.3).

    Made once per query and trained on from sub-query to sub-query (Algorithm 1), or copied
    afresh from the scoring network before each one (``finetune_start=restart``, see
    :class:`Finetuner`); plain SGD at ``finetune_lr_factor * lr_scoring`` for
    ``finetune_epochs`` epochs, rotation loss only.
    ``features [U, 4, d]`` (``finetune_scope=head``): the rotation head alone moves, on the
    cached features; ``None``: everything but the class head moves, on the images.
    """

    def __init__(self, net: ScoringNet, features: torch.Tensor | None, ctx: QueryContext):
        super().__init__(net.rotation_head if features is not None else net, features, ctx)

    def __call__(self, picked: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """Fine-tune on ``picked`` (positions in the pool), then ``S_D [R]`` of ``remaining``."""
        gen = self.next_generator()
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
            rot_logits, _ = net(scoring.rotations(self.ctx.normalize(take(x, pos))))
            return F.cross_entropy(rot_logits, scoring.rotation_labels(pos.numel(), x.device))

        fit(net, x.shape[0], net_loss, self.spec, gen, params=params, phase="finetune")
        pool_x = self.ctx.x[self.ctx.unlabeled[remaining]]
        return score_pool(net, pool_x, self.ctx.normalize, self.cfg.eval_batch_size).s_s
