"""DBAL: Deep Bayesian Active Learning with MC dropout (Gal, Islam & Ghahramani 2017).

The task network is sampled ``T = mc_samples`` times with dropout active, and the pool is ranked
by ``dbal_acquisition``: ``bald`` (mutual information between prediction and weights, Houlsby et
al. 2011) or ``max_entropy`` (entropy of the mean prediction).

Dropout sits only before the task network's classifier (:class:`pal.models.TaskNet`), so the
stochastic passes differ only in the last layer: the backbone runs once per image (eval mode,
BatchNorm frozen) and the ``T`` dropout masks and classifier passes act on its cached features.
That makes MC sampling cost about one ordinary forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pal import scoring
from pal.config import ConfigError
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import eval_chunks

if TYPE_CHECKING:
    from pal.config import Config
    from pal.training import Normalizer


@register_strategy("dbal")
class DBALStrategy(Strategy):
    """The ``n`` samples with the highest BALD or max-entropy score under MC dropout."""

    cpu_bf16 = True

    @classmethod
    def check_config(
        cls,
        config: Config,
        query_size: int,
        image_hw: tuple[int, int],
        task: str = "classification",
    ) -> None:
        if config.dropout == 0.0:
            raise ConfigError(
                "dropout: DBAL needs dropout > 0 before the task network's classifier "
                "(MC dropout samples it), got 0.0"
            )

    def choose(self, ctx: QueryContext, n: int) -> Query:
        mc_probs = mc_dropout_probs(
            ctx.task_model,
            ctx.x[ctx.unlabeled],
            ctx.normalize,
            p=self.config.dropout,
            samples=self.config.mc_samples,
            batch_size=self.config.eval_batch_size,
            generator=ctx.generator("dbal"),
        )
        if self.config.dbal_acquisition == "bald":
            scores = scoring.bald(mc_probs)
        else:
            scores = scoring.entropy(mc_probs.mean(dim=2))
        top = scoring.top_n(scores, n)
        name = self.config.dbal_acquisition
        metrics = {"score_mean": float(scores.mean())}
        return Query(ctx.unlabeled[top], metrics, scores={name: scores[top]})


@torch.inference_mode()
def mc_dropout_probs(
    model: nn.Module,
    x: torch.Tensor,
    normalize: Normalizer,
    p: float,
    samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Class probabilities ``[N, K, T]`` of ``T = samples`` MC-dropout passes over ``x``.

    ``model`` is a :class:`pal.models.TaskNet` (``.backbone``, ``.classifier``); it runs in eval
    mode. Per batch the features ``[B, d]`` are computed once, expanded to ``[T, B, d]``, masked
    with inverted dropout of probability ``p`` (masks drawn from ``generator``, so the result is
    deterministic for a seed) and passed through the classifier. ``p`` is the config's dropout,
    not the module's, so a network built without a dropout module can still be sampled.

    Args:
        x: ``uint8 [N, C, H, W]`` images on the model's device.
        p: dropout probability in ``[0, 1)``.

    Returns:
        ``float32 [N, K, T]``.
    """
    model.eval()
    keep = 1.0 - p
    outs = []
    for chunk in eval_chunks(model.backbone, x, batch_size):
        feats = model.backbone(normalize(chunk)).float()  # [B, d]
        mask = torch.rand(
            (samples, *feats.shape), generator=generator, device=generator.device
        ).lt_(keep)  # [T, B, d]
        dropped = feats.unsqueeze(0) * mask / keep  # [T, B, d]
        logits = model.classifier(dropped)  # [T, B, K]
        outs.append(torch.softmax(logits.float(), dim=2).permute(1, 2, 0))  # [B, K, T]
    return torch.cat(outs)
