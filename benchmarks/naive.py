"""The reference: the same round written the usual way with a plain PyTorch DataLoader.

A ``Dataset`` returns one image at a time through per-sample transforms (float conversion,
normalisation, random crop with padding, flip), a ``DataLoader`` collates batches on the host
and each batch is copied to the device; the loop logs ``loss.item()`` every step. Scoring runs
five forward passes per batch as the authors' code does (four rotations and one more for the
class head). Same networks, epochs, batch sizes and optimizer as the library.

With ``subqueries`` it also takes the query's ``K`` sub-queries as the PAL authors' code does:
the first sub-query is the top ``S_S + lambda1 S_C``; before each later one a fresh copy of the
trained scoring network (the authors restart from it every time) is fine-tuned, the whole
network, on the rotation task of every image picked so far (plain SGD at
``finetune_lr_factor * lr_scoring`` for ``finetune_epochs`` epochs, the library's settings), and
the remaining pool is re-scored with the five forward passes through the DataLoader; the top
``S_S + lambda1 S_C + lambda2 S_D`` are taken. Two things the authors' code also does are left
out, so the reference is if anything faster than their code: a class-head pass per fine-tune
batch whose output is unused, and a validation pass over the whole validation set after every
fine-tune epoch.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.phases import timed
from pal.loop import Experiment
from pal.models import ScoringNet, TaskNet, build_backbone
from pal.scoring import subquery_sizes

PHASES = ("task_training", "scoring_training", "scoring", "finetunes", "rescoring")


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


def _train(
    model, loader, epochs, lr, device, loss_of, momentum=0.9, weight_decay=5e-4
) -> list[float]:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
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


def _rotated(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch at 0/90/180/270 degrees ``[4B]`` and the rotation labels."""
    rotated = torch.cat([torch.rot90(xb, i, dims=(-2, -1)) for i in range(4)])
    targets = torch.arange(4, device=xb.device).repeat_interleave(xb.shape[0])
    return rotated, targets


@torch.no_grad()
def _score(net, experiment: Experiment, idx, batch_size: int):
    """``S_S``, ``S_C`` of ``idx`` with five forward passes per batch (four rotations, then the
    upright batch again for the class head), as the authors' code scores."""
    dev, k = experiment.device, len(experiment.classes)
    net.eval()
    s_s, s_c = [], []
    for xb, _ in _loader(experiment, idx, "none", False, batch_size):
        xb = xb.to(dev)
        rot_p = torch.stack(
            [torch.softmax(net(torch.rot90(xb, i, dims=(-2, -1)))[0], 1)[:, i] for i in range(4)],
            dim=1,
        )
        class_p = torch.softmax(net(xb)[1], dim=1)  # the fifth pass
        s_s.append(-rot_p.sum(1))
        s_c.append((class_p.clamp_min(1e-12).log()).mean(1) + torch.log(torch.tensor(float(k))))
    return torch.cat(s_s), torch.cat(s_c)


def _finetune(phi: ScoringNet, experiment: Experiment, idx) -> ScoringNet:
    """A copy of ``phi``, the whole network fine-tuned on the rotation task of ``idx``."""
    cfg = experiment.config
    net = copy.deepcopy(phi)

    def rotation_loss(m, xb, yb):
        rotated, targets = _rotated(xb)
        return F.cross_entropy(m(rotated)[0], targets)

    loader = _loader(experiment, idx, "none", True, cfg.batch_size)
    lr = cfg.finetune_lr_factor * cfg.lr_scoring
    _train(net, loader, cfg.finetune_epochs, lr, experiment.device, rotation_loss, 0.0, 0.0)
    return net


def run_naive(
    experiment: Experiment, n_labeled: int, repeats: int = 1, subqueries: bool = False
) -> dict[str, Any]:
    """Task training, scoring training and scoring of one round, the usual way (scoring: best
    of ``repeats``); with ``subqueries`` the ``K - 1`` sub-query fine-tunes and re-scores too
    (``finetunes``, ``rescoring``), as the authors' code takes them."""
    cfg, dev = experiment.config, experiment.device
    pool = experiment.pool.unlabeled
    labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
    channels, h, w = experiment.x_train.shape[1:]
    k = len(experiment.classes)
    out: dict[str, Any] = {}

    # the networks are built inside the timed phases, as the library's training phases do
    def train_task() -> None:
        task = TaskNet(build_backbone(cfg.task_backbone, channels, (h, w)), k).to(dev)
        loader = _loader(experiment, labeled, experiment.augment_mode, True, cfg.batch_size)
        loss = lambda m, xb, yb: F.cross_entropy(m(xb), yb)  # noqa: E731
        _train(task, loader, cfg.epochs_task, cfg.lr_task, dev, loss)

    _, s = timed(train_task, dev)
    out["task_training"] = {"seconds": s, "images_per_s": cfg.epochs_task * len(labeled) / s}

    def scoring_loss(m, xb, yb):
        rotated, targets = _rotated(xb)
        rot_logits, _ = m(rotated)
        _, class_logits = m(xb)
        return F.cross_entropy(rot_logits, targets) + F.cross_entropy(class_logits, yb)

    def train_scoring() -> ScoringNet:
        net = ScoringNet(build_backbone(cfg.scoring_backbone, channels, (h, w)), k).to(dev)
        loader = _loader(experiment, labeled, experiment.augment_mode, True, cfg.batch_size)
        _train(net, loader, cfg.epochs_scoring, cfg.lr_scoring, dev, scoring_loss)
        return net

    net, s = timed(train_scoring, dev)
    out["scoring_training"] = {"seconds": s, "images_per_s": cfg.epochs_scoring * len(labeled) / s}

    runs = [
        timed(lambda: _score(net, experiment, unlabeled, cfg.eval_batch_size), dev)
        for _ in range(max(1, repeats))
    ]
    (s_s, s_c), s = min(runs, key=lambda run: run[1])
    out["scoring"] = {"seconds": s, "images_per_s": len(unlabeled) / s}

    if subqueries:
        out.update(_subqueries(experiment, net, unlabeled, s_s, s_c))
    out["round_seconds"] = sum(out[p]["seconds"] for p in PHASES if p in out)
    return out


def _subqueries(experiment: Experiment, phi: ScoringNet, unlabeled: np.ndarray, s_s, s_c) -> dict:
    """The query's sub-queries after the first, the authors' way; ``{}`` when there are none."""
    cfg, dev = experiment.config, experiment.device
    n = experiment.query_size
    sizes = subquery_sizes(n, cfg.subqueries) if cfg.lambda2 > 0 else [n]
    if len(sizes) == 1:
        return {}
    base = s_s + cfg.lambda1 * s_c  # [U], positions in `unlabeled`
    picked = torch.topk(base, sizes[0]).indices.cpu()
    finetune_s = rescore_s = 0.0
    tuned = rescored = 0
    for size in sizes[1:]:
        left = torch.ones(len(unlabeled), dtype=torch.bool)
        left[picked] = False
        remaining = left.nonzero().squeeze(1)
        chosen = unlabeled[picked.numpy()]
        net, s = timed(lambda c=chosen: _finetune(phi, experiment, c), dev)
        finetune_s += s
        tuned += cfg.finetune_epochs * len(chosen)
        rest = unlabeled[remaining.numpy()]
        (s_d, _), s = timed(
            lambda m=net, r=rest: _score(m, experiment, r, cfg.eval_batch_size), dev
        )
        rescore_s += s
        rescored += len(rest)
        score = base[remaining.to(base.device)] + cfg.lambda2 * s_d
        picked = torch.cat([picked, remaining[torch.topk(score, size).indices.cpu()]])
    steps = len(sizes) - 1
    return {
        "finetunes": {"seconds": finetune_s, "images_per_s": tuned / finetune_s, "steps": steps},
        "rescoring": {"seconds": rescore_s, "images_per_s": rescored / rescore_s, "steps": steps},
    }
