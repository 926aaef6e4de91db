"""Segmentation's metrics, scores and seeded views against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pal.segmentation import (
    IGNORE,
    confusion_matrix,
    drop_classes,
    hashed_uniform,
    iou,
    nt_xent,
    pixel_kl_uniform_score,
    pixel_shares,
    seeded_views,
    simclr_score,
)


def test_confusion_and_iou_by_hand_with_the_ignore_label():
    target = torch.tensor([[[0, 0, 1], [1, 2, IGNORE]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 2]]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]  # the ignored pixel is not counted
    miou, per_class = iou(conf)
    # class 0: 1 / (1 + 1); class 1: 2 / (2 + 2); class 2: 0 / 1
    assert per_class.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert miou == pytest.approx(1 / 3)


def test_a_class_absent_everywhere_is_left_out_of_the_mean():
    target = torch.tensor([[0, 1]])
    conf = confusion_matrix(target, target, 3)
    miou, per_class = iou(conf)
    assert math.isnan(per_class[2]) and miou == 1.0


def test_simclr_score_is_minus_the_cosine():
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    z2 = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert simclr_score(z1, z2).tolist() == pytest.approx([-1.0, 0.0, 1.0])


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    t = 0.5
    # for each of the 4 views: positive at cos 1, two negatives at cos 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(expected)
    assert float(nt_xent(z1, -z2, t)) > expected


def test_pixel_kl_uniform_score_by_hand():
    p = torch.tensor([0.9, 0.1])
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 1] = p.log()
    confident = float(p.log().mean() + math.log(2))
    assert float(pixel_kl_uniform_score(logits)) == pytest.approx(confident / 2)
    valid = torch.tensor([[[False, True]]])
    assert float(pixel_kl_uniform_score(logits, valid)) == pytest.approx(confident)
    assert float(pixel_kl_uniform_score(torch.zeros(1, 5, 3, 3))) == pytest.approx(0.0, abs=1e-6)


def test_hashed_uniform_is_uniform_and_depends_on_the_index_only():
    u = hashed_uniform(0, torch.arange(50_000), 0)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
    counts = torch.histc(u, 10, 0, 1)
    assert float(counts.min()) > 4500 and float(counts.max()) < 5500
    alone = hashed_uniform(0, torch.tensor([7]), 0)
    assert float(alone) == float(hashed_uniform(0, torch.tensor([3, 7, 11]), 0)[1])
    assert float(alone) != float(hashed_uniform(1, torch.tensor([7]), 0))


def test_a_score_does_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    images = torch.randn(10, 3, 16, 16)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()

    def scores(idx):
        v1, v2 = seeded_views(images[idx], idx, seed=3)
        return simclr_score(net(v1), net(v2))

    with torch.no_grad():
        a = scores(torch.tensor([3, 5]))
        b = scores(torch.tensor([1, 3, 9]))
    assert float(a[0]) == pytest.approx(float(b[1]), abs=1e-6)
    v1, v2 = seeded_views(images[:4], torch.arange(4), seed=3)
    assert v1.shape == v2.shape == (4, 3, 16, 16)
    assert not torch.allclose(v1, v2)  # two different views
    w1, _ = seeded_views(images[:4], torch.arange(4), seed=4)
    assert not torch.allclose(v1, w1)  # the seed decides them


def test_pixel_shares_and_dropped_classes():
    masks = torch.tensor([[[0, 1, 1], [2, IGNORE, 2]]], dtype=torch.uint8)
    assert pixel_shares(masks, 3).tolist() == pytest.approx([0.2, 0.4, 0.4])
    dropped = drop_classes(masks, torch.tensor([2]))
    assert dropped.dtype == torch.uint8
    assert dropped.tolist() == [[[0, 1, 1], [IGNORE, IGNORE, IGNORE]]]
    assert not torch.isin(dropped, torch.tensor([2])).any()


def test_digit_scenes_are_digits_on_a_blank_canvas_labelled_by_class():
    import numpy as np

    from pal.data.digits import digit_scenes, load_digits

    data = load_digits("data", False, None)
    digits, labels = data.x_train[:, 0].numpy(), data.y_train.numpy()
    images, masks = digit_scenes(digits, labels, 50, seed=0)
    again, again_masks = digit_scenes(digits, labels, 50, seed=0)
    other, _ = digit_scenes(digits, labels, 50, seed=1)
    assert images.shape == (50, 1, 32, 32) and masks.shape == (50, 32, 32)
    assert np.array_equal(images, again) and np.array_equal(masks, again_masks)
    assert not np.array_equal(images, other)
    assert set(np.unique(masks)) <= set(range(11)) and len(np.unique(masks)) > 5
    assert ((masks == 0) == (images[:, 0] <= 64)).all()  # ink is a digit, the rest background
    assert 0.05 < float((masks > 0).mean()) < 0.6
    # each scene's labelled digits are among the classes pasted: at most two per scene
    assert max(len(set(m[m > 0].tolist())) for m in masks) <= 2


@pytest.mark.parametrize(("name", "stride"), [("segcnn", 4), ("mobilenetv2", 16)])
@pytest.mark.parametrize("channels", [1, 3])
def test_segnets_give_full_size_logits_and_a_pooled_embedding(name, stride, channels):
    from pal.segnets import build_segnet

    torch.manual_seed(0)
    net = build_segnet(name, channels, num_classes=11).eval()
    x = torch.randn(2, channels, 32, 32)
    with torch.no_grad():
        assert net(x).shape == (2, 11, 32, 32)
        bottleneck = net.bottleneck(x)
        assert bottleneck.shape == (2, net.encoder.out_channels, 32 // stride, 32 // stride)
        assert net.encoder.output_stride == stride
        assert net.embedding(x).shape == (2, net.encoder.out_channels)


def test_segcnn_learns_digit_scenes():
    import torch.nn.functional as F

    from pal.data.digits import digit_scenes, load_digits
    from pal.segnets import build_segnet

    data = load_digits("data", False, None)
    images, masks = digit_scenes(data.x_train[:, 0].numpy(), data.y_train.numpy(), 64, seed=0)
    x = torch.from_numpy(images).float() / 255.0
    y = torch.from_numpy(masks).long()
    torch.manual_seed(0)
    net = build_segnet("segcnn", 1, 11)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(net(x), y, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        miou, _ = iou(confusion_matrix(net.eval()(x).argmax(1), y, 11))
    background_only = iou(confusion_matrix(torch.zeros_like(y), y, 11))[0]
    assert miou > background_only
