"""VAAL (Sinha et al., 2019): VAE shapes, the strategy on real digits, discrimination, config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pal
from pal.strategies import build_strategy
from pal.strategies.vaal import VAE, Discriminator
from tests.helpers import make_context

SMALL = pal.Config(strategy="vaal", vaal_epochs=2, batch_size=32, device="cpu")


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 7, 9)])
def test_vae_reconstructs_the_input_shape(shape):
    torch.manual_seed(0)
    vae = VAE(shape[0], shape[1:], latent_dim=16)
    x = torch.randn(5, *shape)
    recon, mu, logvar = vae(x, torch.Generator().manual_seed(0))
    assert recon.shape == (5, *shape)
    assert mu.shape == logvar.shape == (5, 16)
    assert Discriminator(16)(mu).shape == (5,)


def test_query_returns_n_unique_unlabeled_indices_and_is_deterministic(digits):
    def run(seed):
        ctx = make_context(digits, SMALL, range(0, 60), range(60, 260), seed=seed)
        return build_strategy(SMALL).query(ctx, 20)

    first, second, other = run(3), run(3), run(4)
    chosen = first.indices.tolist()
    assert len(set(chosen)) == 20
    assert set(chosen) <= set(range(60, 260))
    assert torch.equal(first.indices, second.indices)
    assert not torch.equal(first.indices, other.indices)
    assert 0.0 <= first.metrics["disc_labeled_prob_mean"] <= 1.0
    assert 0.0 <= first.metrics["disc_balanced_accuracy"] <= 1.0


def test_discriminator_finds_images_unlike_the_labeled_set(digits):
    """Pool = 200 digits like the labeled ones + 20 pure-noise images: VAAL queries the noise."""
    noise = torch.randint(
        0,
        256,
        (20, *digits.x_train.shape[1:]),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.cat([digits.x_train[:400], noise])  # noise at dataset indices 400..419
    labels = torch.cat([digits.y_train[:400], torch.zeros(20, dtype=torch.long)])
    data = dataclasses.replace(digits, x_train=x, y_train=labels)
    config = SMALL.replace(vaal_epochs=10)  # 18 of 20 at seed 0; >= 18 for seeds 0-4
    ctx = make_context(data, config, range(0, 200), range(200, 420), seed=0)
    ctx.augment_mode = "none"
    chosen = build_strategy(config).query(ctx, 20).indices
    assert int((chosen >= 400).sum()) >= 12


@pytest.mark.parametrize(
    ("field", "value"), [("vaal_latent_dim", 1), ("vaal_epochs", 0), ("vaal_lr", 0.0)]
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(pal.ConfigError, match=field):
        pal.Config(**{field: value})
