"""Batched, seeded RandAugment on uint8 [B, C, H, W] tensors: determinism, per-image draws, the
identity cases, argument checks and a few operations checked pixel by pixel."""

from __future__ import annotations

import pytest
import torch

from pal import randaugment as ra
from pal.randaugment import OPS, rand_augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 16, c: int = 3, h: int = 12, w: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=_gen(seed), dtype=torch.uint8)


@pytest.mark.parametrize("c", [1, 3])
def test_shape_dtype_and_device_are_kept(c):
    x = _images(c=c)
    out = rand_augment(x, 2, 0.5, _gen())
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device


def test_same_seed_same_output_other_seed_other_output():
    x = _images(b=32)
    a = rand_augment(x, 2, 0.5, _gen(7))
    assert torch.equal(a, rand_augment(x, 2, 0.5, _gen(7)))
    assert not torch.equal(a, rand_augment(x, 2, 0.5, _gen(8)))


def test_draws_come_from_the_generator_only():
    x, gen = _images(), _gen(3)
    first = rand_augment(x, 1, 0.5, gen)
    second = rand_augment(x, 1, 0.5, gen)  # the generator has moved on
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    a = rand_augment(x, 1, 0.5, _gen(3))
    torch.manual_seed(1)
    assert torch.equal(a, rand_augment(x, 1, 0.5, _gen(3)))  # global RNG plays no part


@pytest.mark.parametrize(("ops", "magnitude"), [(0, 0.5), (3, 0.0), (0, 0.0)])
def test_no_ops_or_no_magnitude_is_the_identity(ops, magnitude):
    x = _images()
    gen = _gen()
    state = gen.get_state()
    assert torch.equal(rand_augment(x, ops, magnitude, gen), x)
    assert torch.equal(gen.get_state(), state)  # nothing drawn


def test_most_images_change():
    x = _images(b=64)
    out = rand_augment(x, 2, 0.5, _gen())
    changed = (out != x).flatten(1).any(1)
    # only images that drew identity twice (1/13 squared), or a no-op (autocontrast of an
    # already full-range image), may stay
    assert changed.float().mean() > 0.75


def test_each_image_draws_its_own_ops():
    x = _images(b=1, c=1, h=16, w=16).expand(64, -1, -1, -1).contiguous()
    out = rand_augment(x, 1, 0.5, _gen())
    distinct = torch.unique(out.flatten(1), dim=0)
    assert distinct.shape[0] >= 8  # 13 ops, most of them with two signs


def test_every_op_is_drawn_and_both_signs_apply():
    b = 2000
    gen = _gen(5)
    op = torch.randint(0, len(OPS), (b,), generator=gen)
    assert torch.bincount(op, minlength=len(OPS)).min() > 0
    # translate_x by +/- 3 px on a 10-wide image: each sign moves the image its own way
    x = _images(b=2, c=1, h=10, w=10)
    op = torch.full((2,), OPS.index("translate_x"))
    out = ra._apply(x, op, torch.tensor([1.0, -1.0]), 1.0)
    assert torch.equal(out[0, :, :, 3:], x[0, :, :, :-3]) and (out[0, :, :, :3] == 0).all()
    assert torch.equal(out[1, :, :, :-3], x[1, :, :, 3:]) and (out[1, :, :, -3:] == 0).all()


def test_each_op_index_applies_that_op():
    x, m = _images(b=4, h=32, w=32) // 2 + 20, 0.6  # 20..147, enough pixels to equalise
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    f = 1 + 0.9 * m * sign
    expected = {
        "identity": x,
        "autocontrast": ra._autocontrast(x),
        "equalize": ra._equalize(x),
        "brightness": ra._brightness(x, f),
        "contrast": ra._contrast(x, f),
        "sharpness": ra._sharpness(x, f),
        "solarize": ra._solarize(x, 256 * (1 - m)),
        "posterize": ra._posterize(x, 6),
    }
    for k, name in enumerate(OPS):
        op = torch.full((4,), k)
        out = ra._apply(x, op, sign, m)
        if name in expected:
            assert torch.equal(out, expected[name]), name
        else:
            assert torch.equal(out, ra._affine(x, ra._theta(op, sign, m, 32, 32))), name
        assert name == "identity" or not torch.equal(out, x), name
    mixed = torch.arange(4) * 3  # identity, brightness, solarize, shear_x
    out = ra._apply(x, mixed, sign, m)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], expected["brightness"][1])
    assert torch.equal(out[2], expected["solarize"][2])


def test_geometric_ops_at_zero_strength_are_exact_identities():
    x = _images(b=len(OPS))
    op = torch.arange(len(OPS))
    theta = ra._theta(op, torch.ones(len(OPS)), 0.0, 12, 10)
    assert torch.equal(ra._affine(x, theta), x)


def _orientation_deg(img: torch.Tensor) -> float:
    """The principal axis of the nonzero pixels of ``[H, W]``, in degrees (second moments)."""
    ys, xs = torch.nonzero(img, as_tuple=True)
    ys, xs = ys.double() - ys.double().mean(), xs.double() - xs.double().mean()
    mu20, mu02, mu11 = (xs * xs).mean(), (ys * ys).mean(), (xs * ys).mean()
    return float(torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02)))


def test_rotate_turns_a_centred_bar_by_30_degrees_times_magnitude():
    x = torch.zeros(2, 1, 31, 31, dtype=torch.uint8)
    x[..., 14:17, 5:26] = 200  # a centred horizontal bar, 3 x 21
    op = torch.full((2,), OPS.index("rotate"))
    out = ra._affine(x, ra._theta(op, torch.tensor([1.0, -1.0]), 1.0, 31, 31))
    assert out[0, 0, 15, 15] == 200 and out[1, 0, 15, 15] == 200  # the centre stays put
    a, b = _orientation_deg(out[0, 0]), _orientation_deg(out[1, 0])
    assert abs(abs(a) - 30) < 3 and abs(a + b) < 1  # 30 degrees, opposite ways
    assert abs(int((out[0] > 0).sum()) - int((x[0] > 0).sum())) <= 8  # area roughly kept
    half = ra._affine(x, ra._theta(op, torch.ones(2), 0.5, 31, 31))
    assert abs(_orientation_deg(half[0, 0]) - a / 2) < 3


def test_shear_and_translate_y_move_rows_or_columns():
    x = _images(b=1, c=1, h=10, w=10)
    out = ra._apply(x, torch.tensor([OPS.index("translate_y")]), torch.ones(1), 0.5)
    assert torch.equal(out[0, 0, 2:], x[0, 0, :-2]) and (out[0, 0, :2] == 0).all()
    sheared = ra._apply(x, torch.tensor([OPS.index("shear_x")]), torch.ones(1), 1.0)
    # shear along x keeps every row's pixels in that row
    for r in (0, 5, 9):
        kept = sheared[0, 0, r][sheared[0, 0, r] > 0]
        assert set(kept.tolist()) <= set(x[0, 0, r].tolist())


def test_solarize_inverts_the_pixels_above_the_threshold():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    out = ra._solarize(x, 128.0).flatten()
    assert torch.equal(out[:128], torch.arange(128, dtype=torch.uint8))
    assert torch.equal(out[128:], 255 - torch.arange(128, 256, dtype=torch.uint8))
    assert torch.equal(ra._solarize(x, 256.0), x)  # magnitude 0


def test_posterize_keeps_the_top_bits():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    out = ra._posterize(x, 4)
    assert torch.equal(out, (x // 16) * 16)
    assert torch.equal(ra._posterize(x, 8), x)
    assert torch.unique(out).numel() == 16


def test_autocontrast_stretches_each_channel_to_the_full_range():
    x = torch.zeros(2, 2, 4, 4, dtype=torch.uint8)
    x[0, 0] = torch.arange(16).view(4, 4) * 2 + 50  # 50..80
    x[0, 1] = 7  # constant: kept
    x[1, 0] = torch.arange(16).view(4, 4) * 10 + 100  # 100..250
    x[1, 1] = torch.arange(16).view(4, 4) * 17  # already 0..255
    out = ra._autocontrast(x)
    assert out[0, 0].min() == 0 and out[0, 0].max() == 255
    assert out[1, 0].min() == 0 and out[1, 0].max() == 255
    assert (out[0, 0].flatten().diff() > 0).all()  # order kept
    assert torch.equal(out[0, 1], x[0, 1]) and torch.equal(out[1, 1], x[1, 1])


def test_equalize_flattens_the_histogram_like_pil():
    x = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    x.view(-1)[:] = torch.arange(256) // 8  # 32 values, 8 pixels each, in 0..31
    out = ra._equalize(x).flatten()
    # PIL: step = (256 - 8) // 255 = 0 -> unchanged; use more pixels per value instead
    assert torch.equal(out, x.flatten())
    y = (torch.arange(1024) // 128).to(torch.uint8).view(1, 1, 32, 32)  # 8 values, 128 each
    out = ra._equalize(y).flatten()
    step = (1024 - 128) // 255  # 3
    expected = torch.tensor([(step // 2 + 128 * v) // step for v in range(8)]).clamp(max=255)
    assert torch.equal(out, expected.repeat_interleave(128).to(torch.uint8))
    assert out.max() == 255 and out.min() == 0


def test_enhance_ops_scale_per_image():
    x = torch.full((2, 1, 5, 5), 100, dtype=torch.uint8)
    x[:, :, 2, 2] = 200
    factor = torch.tensor([1.5, 0.5])
    bright = ra._brightness(x, factor)
    assert bright[0, 0, 0, 0] == 150 and bright[1, 0, 0, 0] == 50
    assert bright[0, 0, 2, 2] == 255  # clipped
    contrast = ra._contrast(x, factor)
    assert contrast[0, 0, 2, 2] - contrast[0, 0, 0, 0] == 150  # spread grows by 1.5
    assert contrast[1, 0, 2, 2] - contrast[1, 0, 0, 0] == 50  # and shrinks by 0.5
    sharp = ra._sharpness(x, torch.tensor([2.0, 0.0]))
    assert sharp[0, 0, 2, 2] > 200 - 1 and sharp[0, 0, 1, 1] < 100  # edges enhanced
    assert sharp[1, 0, 2, 2] < 200 and sharp[1, 0, 1, 1] > 100  # blurred
    assert torch.equal(sharp[:, :, 0], x[:, :, 0])  # border kept
    one = torch.ones(2)
    for fn in (ra._brightness, ra._contrast, ra._sharpness):
        assert torch.equal(fn(x, one), x)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 0.5), "ops"),
        ((1.5, 0.5), "ops"),
        ((1, -0.1), "magnitude"),
        ((1, 1.5), "magnitude"),
        ((1, float("nan")), "magnitude"),
        ((1, "0.5"), "magnitude"),
    ],
)
def test_bad_arguments_are_rejected(args, name):
    with pytest.raises(ValueError, match=name):
        rand_augment(_images(b=2), *args, _gen())


@pytest.mark.parametrize(
    "x",
    [torch.zeros(2, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8)],
    ids=["float", "3d"],
)
def test_bad_input_is_rejected(x):
    with pytest.raises(ValueError, match="x: must be a uint8"):
        rand_augment(x, 1, 0.5, _gen())


def test_a_batch_of_256_mnist_sized_images():
    x = _images(b=256, c=1, h=28, w=28)
    out = rand_augment(x, 2, 0.3, _gen())
    assert out.shape == (256, 1, 28, 28) and out.dtype == torch.uint8
    assert (out != x).flatten(1).any(1).float().mean() > 0.75
