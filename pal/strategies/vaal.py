"""VAAL: Variational Adversarial Active Learning (Sinha, Ebrahimi & Darrell, ICCV 2019).

One query trains, from scratch, a VAE on ``D_L`` and ``D_U`` together and a discriminator on the
VAE's latent mean that tells labeled from unlabeled samples. The VAE learns to reconstruct both
sets and to fool the discriminator (both sets should look "labeled"); the discriminator learns
``D_L -> 1``, ``D_U -> 0``. The query is the pool samples the discriminator is most sure are
unlabeled: the lowest probability of being labeled, i.e. the least represented by ``D_L``.

Small-image version: the conv stack is built from the image size (as ``pal.models`` does), so it
serves 8x8 digits and 32x32 CIFAR alike. Every random draw (initial weights, batches,
augmentation, reparameterisation noise) comes from the query's seed, so a query is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pal import scoring
from pal.placement import take
from pal.rng import seeded_init
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import (
    Normalizer,
    TrainingDivergedError,
    augment,
    batches,
    clear_cast_cache,
    eval_chunks,
)

_WIDTHS = (32, 64, 128)  # channels of the stride-2 convs, at most three


class VAE(nn.Module):
    """Conv VAE for ``[B, C, H, W]`` images (normalised floats) with a ``latent_dim`` latent.

    The encoder halves the map with stride-2 convs (up to three) while both sides are >= 4 px,
    then maps the flattened map to ``mu`` and ``logvar`` ``[B, latent_dim]``; the decoder mirrors
    it with transposed convs back to exactly ``[B, C, H, W]`` (odd sides included).
    """

    def __init__(self, in_channels: int, image_hw: tuple[int, int], latent_dim: int):
        super().__init__()
        sizes = [tuple(image_hw)]  # map size before each conv, then after the last
        enc: list[nn.Module] = []
        cin = in_channels
        for width in _WIDTHS:
            h, w = sizes[-1]
            if min(h, w) < 4:
                break
            enc += [nn.Conv2d(cin, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            sizes.append((h // 2, w // 2))
            cin = width
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.map_shape = (cin, *sizes[-1])
        flat = math.prod(self.map_shape)
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        widths = [in_channels, *_WIDTHS[: len(sizes) - 1]]
        dec: list[nn.Module] = []
        for i in range(len(sizes) - 1, 0, -1):  # undo conv i-1: sizes[i] -> sizes[i-1]
            (h, w), (th, tw) = sizes[i], sizes[i - 1]
            pad = (th - 2 * h, tw - 2 * w)  # 0 or 1: restores odd sides
            dec.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 4, 2, 1, output_padding=pad))
            if i > 1:
                dec += [nn.BatchNorm2d(widths[i - 1]), nn.ReLU()]
        if not dec:  # image too small for any stride-2 conv: a 1x1 conv back to C channels
            dec.append(nn.Conv2d(in_channels, in_channels, 1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, H, W] -> (mu [B, z], logvar [B, z])``."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, latent_dim] -> [B, C, H, W]``."""
        return self.decoder(F.relu(self.from_latent(z)).view(-1, *self.map_shape))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction [B, C, H, W], mu [B, z], logvar [B, z])``; the latent is sampled
        with noise from ``generator`` (reparameterisation trick)."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.decode(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


class Discriminator(nn.Module):
    """MLP ``mu [B, latent_dim] -> logit [B]`` of the sample being labeled."""

    def __init__(self, latent_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu).squeeze(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` averaged over batch and latent dims (scalar), on the
    same per-element scale as the reconstruction MSE."""
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())


def train_vaal(
    vae: VAE,
    disc: Discriminator,
    x_labeled: torch.Tensor,
    x_unlabeled: torch.Tensor,
    normalize: Normalizer,
    epochs: int,
    lr: float,
    batch_size: int,
    augment_mode: str,
    generator: torch.Generator,
    progress=None,
    beta: float = 1.0,
    adversary_weight: float = 1.0,
) -> None:
    """Adversarial VAE/discriminator training, one epoch = one shuffled pass over the pool.

    Each step pairs a pool batch with a labeled batch (labeled positions cycle through seeded
    permutations of ``D_L``) and runs the VAE once on both together. VAE step: reconstruction MSE
    + ``beta`` KL + ``adversary_weight`` BCE(disc(mu), labeled) over the whole batch; then the
    discriminator step: BCE with labeled ``mu -> 1``, pool ``mu -> 0`` (``mu`` detached). Losses
    are means over the combined batch (Adam is invariant to the constant factor between that and
    the paper's sum of per-set means).

    Args:
        x_labeled: ``uint8 [L, C, H, W]``; x_unlabeled: ``uint8 [U, C, H, W]``.
    """
    n_lab, n_unl = x_labeled.shape[0], x_unlabeled.shape[0]
    if n_unl == 0:
        return
    device = generator.device
    vae.train()
    disc.train()
    opt_vae = torch.optim.Adam(vae.parameters(), lr=lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=lr)
    lab_size = min(batch_size, n_lab)
    for epoch in range(1, epochs + 1):
        unl_batches = batches(n_unl, batch_size, generator)
        if n_lab:  # a stream of labeled positions, cycling through fresh permutations
            reps = -(-len(unl_batches) * lab_size // n_lab)
            stream = torch.cat(
                [torch.randperm(n_lab, generator=generator, device=device) for _ in range(reps)]
            )
        total = torch.zeros((), device=device)
        for i, unl in enumerate(unl_batches):
            lab = stream[i * lab_size : (i + 1) * lab_size] if n_lab else unl[:0]
            images = torch.cat([take(x_labeled, lab), take(x_unlabeled, unl)])
            inputs = normalize(augment(images, augment_mode, generator))  # [b_l + b_u, C, H, W]
            is_labeled = torch.cat(
                [torch.ones(lab.numel(), device=device), torch.zeros(unl.numel(), device=device)]
            )

            recon, mu, logvar = vae(inputs, generator)
            fool = F.binary_cross_entropy_with_logits(disc(mu), torch.ones_like(is_labeled))
            vae_loss = (
                F.mse_loss(recon, inputs)
                + beta * kl_to_standard_normal(mu, logvar)
                + adversary_weight * fool
            )
            opt_vae.zero_grad(set_to_none=True)
            vae_loss.backward()
            opt_vae.step()
            clear_cast_cache()

            disc_loss = F.binary_cross_entropy_with_logits(disc(mu.detach()), is_labeled)
            opt_disc.zero_grad(set_to_none=True)
            disc_loss.backward()
            opt_disc.step()
            clear_cast_cache()
            total += vae_loss.detach() + disc_loss.detach()
        if not torch.isfinite(total):  # one host sync per epoch, not per step
            raise TrainingDivergedError(
                f"vaal training diverged: the loss became {float(total)} in epoch {epoch} "
                f"(optimizer adam, lr {lr}); lower vaal_lr"
            )
        if progress is not None:
            progress("vaal", epoch, epochs)


@torch.inference_mode()
def labeled_probability(
    vae: VAE, disc: Discriminator, x: torch.Tensor, normalize: Normalizer, batch_size: int
) -> torch.Tensor:
    """Eval-mode ``P(labeled) [N]`` of ``x uint8 [N, C, H, W]`` from the discriminator on ``mu``,
    in batches, no augmentation."""
    vae.eval()
    disc.eval()
    probs = [
        torch.sigmoid(disc(vae.encode(normalize(c))[0]).float())
        for c in eval_chunks(vae.encoder, x, batch_size)
    ]
    return torch.cat(probs) if probs else torch.empty(0, device=x.device)


@register_strategy("vaal")
class VAALStrategy(Strategy):
    """VAE + adversarial discriminator; query the least "labeled-looking" pool samples."""

    cpu_bf16 = True

    def choose(self, ctx: QueryContext, n: int) -> Query:
        cfg = self.config
        channels, h, w = ctx.x.shape[1:]
        with seeded_init(ctx.seed, "vaal-init"):
            vae = VAE(channels, (h, w), cfg.vaal_latent_dim)
            disc = Discriminator(cfg.vaal_latent_dim)
        vae.to(ctx.device)
        disc.to(ctx.device)
        train_vaal(
            vae,
            disc,
            ctx.x[ctx.labeled],
            ctx.x[ctx.unlabeled],
            ctx.normalize,
            cfg.vaal_epochs,
            cfg.vaal_lr,
            cfg.batch_size,
            ctx.augment_mode,
            ctx.generator("vaal"),
            ctx.progress,
        )
        pool = ctx.unlabeled
        p = labeled_probability(vae, disc, ctx.x[pool], ctx.normalize, cfg.eval_batch_size)
        p_lab = labeled_probability(
            vae, disc, ctx.x[ctx.labeled], ctx.normalize, cfg.eval_batch_size
        )
        positions = scoring.top_n(-p, n)
        # how well the discriminator tells D_L from D_U (0.5: at chance, and then the query is
        # whatever tiny differences it has, often one or two classes)
        separation = 0.5 * (float((p_lab > 0.5).float().mean()) + float((p < 0.5).float().mean()))
        return Query(
            pool[positions.to(pool.device)],
            {"disc_labeled_prob_mean": float(p.mean()), "disc_balanced_accuracy": separation},
            scores={"labeled_probability": p[positions]},
        )
