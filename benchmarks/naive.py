"""The reference: the same round written the usual way with a plain PyTorch DataLoader.

A ``Dataset`` returns one image at a time through per-sample transforms (float conversion,
normalisation, random crop with padding, flip), a ``DataLoader`` collates batches on the host
and each batch is copied to the device; the loop logs ``loss.item()`` every step. Scoring runs
five forward passes per batch as the authors' code does (four rotations and one more for the
class head). Same networks, epochs, batch sizes and optimizer as the library.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.phases import timed
from pal.loop import Experiment
from pal.models import ScoringNet, TaskNet, build_backbone


class ImageDataset(Dataset):
    """``uint8 [N, C, H, W]`` images and labels on the host, transformed one sample at a time."""

    def __init__(self, x, y, mean, std, augment: str, seed: int):
        self.x, self.y = x.cpu(), y.cpu()
        self.mean, self.std = mean.cpu().view(-1, 1, 1), std.cpu().view(-1, 1, 1)
        self.augment = augment
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = (self.x[i].float() / 255.0 - self.mean) / self.std
        if self.augment != "none":
            h, w = img.shape[-2:]
            pad = max(1, h // 8)
            padded = F.pad(img, (pad, pad, pad, pad))
            dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=self.gen).tolist()
            img = padded[:, dy : dy + h, dx : dx + w]
            if self.augment == "crop_flip" and torch.rand(1, generator=self.gen).item() < 0.5:
                img = img.flip(-1)
        return img, self.y[i]


def _loader(experiment: Experiment, idx, augment: str, shuffle: bool, batch_size: int):
    norm = experiment.normalize
    data = ImageDataset(
        experiment.x_train[idx],
        experiment.task.labels[idx],
        norm.mean,
        norm.std,
        augment,
        experiment.config.seed,
    )
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def _train(model, loader, epochs, lr, device, loss_of) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_of(model, xb, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def run_naive(experiment: Experiment, n_labeled: int) -> dict[str, Any]:
    """Task training, scoring training and scoring of one round, the usual way."""
    cfg, dev = experiment.config, experiment.device
    pool = experiment.pool.unlabeled
    labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
    channels, h, w = experiment.x_train.shape[1:]
    k = len(experiment.classes)
    out: dict[str, Any] = {}

    task = TaskNet(build_backbone(cfg.task_backbone, channels, (h, w)), k).to(dev)
    loader = _loader(experiment, labeled, experiment.augment_mode, True, cfg.batch_size)
    _, s = timed(
        lambda: _train(
            task,
            loader,
            cfg.epochs_task,
            cfg.lr_task,
            dev,
            lambda m, xb, yb: F.cross_entropy(m(xb), yb),
        ),
        dev,
    )
    out["task_training"] = {"seconds": s, "images_per_s": cfg.epochs_task * len(labeled) / s}

    net = ScoringNet(build_backbone(cfg.scoring_backbone, channels, (h, w)), k).to(dev)

    def scoring_loss(m, xb, yb):
        rotated = torch.cat([torch.rot90(xb, i, dims=(-2, -1)) for i in range(4)])
        targets = torch.arange(4, device=dev).repeat_interleave(xb.shape[0])
        rot_logits, _ = m(rotated)
        _, class_logits = m(xb)
        return F.cross_entropy(rot_logits, targets) + F.cross_entropy(class_logits, yb)

    loader = _loader(experiment, labeled, experiment.augment_mode, True, cfg.batch_size)
    _, s = timed(
        lambda: _train(net, loader, cfg.epochs_scoring, cfg.lr_scoring, dev, scoring_loss), dev
    )
    out["scoring_training"] = {"seconds": s, "images_per_s": cfg.epochs_scoring * len(labeled) / s}

    @torch.no_grad()
    def score():
        net.eval()
        s_s, s_c = [], []
        for xb, _ in _loader(experiment, unlabeled, "none", False, cfg.eval_batch_size):
            xb = xb.to(dev)
            rot_p = torch.stack(
                [
                    torch.softmax(net(torch.rot90(xb, i, dims=(-2, -1)))[0], 1)[:, i]
                    for i in range(4)
                ],
                dim=1,
            )
            class_p = torch.softmax(net(xb)[1], dim=1)  # the fifth pass
            s_s.append(-rot_p.sum(1))
            s_c.append((class_p.clamp_min(1e-12).log()).mean(1) + torch.log(torch.tensor(float(k))))
        return torch.cat(s_s), torch.cat(s_c)

    _, s = timed(score, dev)
    out["scoring"] = {"seconds": s, "images_per_s": len(unlabeled) / s}
    out["round_seconds"] = sum(
        out[p]["seconds"] for p in ("task_training", "scoring_training", "scoring")
    )
    return out
