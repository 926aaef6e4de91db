"""One PAL round of a segmentation config broken into phases (Section 3.1, Eq. 2).

Phases: task training (DeepLabv3, pixel cross-entropy), scoring-network training (pixel
cross-entropy + NT-Xent on two views), and scoring the pool (``S_S`` from the two seeded views,
``S_C`` pixel-wise), timed beside the bare forward passes scoring needs (the encoder on the image
and both views, the class head at full size, the projection head; no scores). The round is
``lambda2 = 0`` as in the paper's Cityscapes setting: no sub-query fine-tune.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.phases import _phase, bf16_peak, timed, train_flops_per_image
from pal.loop import Experiment
from pal.rng import seeded_init
from pal.segmentation import nt_xent, seeded_views
from pal.segnets import build_segnet
from pal.strategies.pal_segmentation import (
    SegScoringNet,
    score_seg_pool,
    train_seg_scoring_net,
)
from pal.training import FitSpec, eval_chunks, pixel_cross_entropy


def run_segmentation_phases(
    experiment: Experiment, n_labeled: int, repeats: int = 1
) -> dict[str, Any]:
    """Time each phase of one PAL round of ``experiment``'s segmentation config on its first
    ``n_labeled`` pool images as ``D_L`` and the rest of the pool as ``D_U``."""
    cfg, dev = experiment.config, experiment.device
    pool = torch.as_tensor(experiment.unlabeled_indices(), device=dev)
    labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
    x, masks, norm = experiment.x_train, experiment.task.labels, experiment.normalize
    out: dict[str, Any] = {"n_labeled": int(labeled.numel()), "n_unlabeled": int(unlabeled.numel())}
    peak = bf16_peak(dev)
    batch = labeled[: cfg.batch_size]

    with experiment.autocast():
        task, seconds = timed(
            lambda: experiment.task.train(
                x, labeled.cpu().numpy(), 0, norm, experiment.augment_mode, None
            ),
            dev,
        )
        flops = train_flops_per_image(
            task, norm(x[batch]), lambda m, b: pixel_cross_entropy(m(b), masks[batch])
        )
        out["task_training"] = _phase(seconds, cfg.epochs_task * labeled.numel(), flops, peak)

        with seeded_init(cfg.seed, "bench-scoring"):
            segnet = build_segnet(cfg.scoring_backbone, x.shape[1], len(experiment.classes))
            net = SegScoringNet(segnet)
        net.to(dev, memory_format=norm.memory_format)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        spec = FitSpec.from_config(cfg, "scoring")
        _, seconds = timed(
            lambda: train_seg_scoring_net(
                net,
                x[labeled],
                masks[labeled],
                norm,
                spec,
                experiment.augment_mode,
                gen,
                cfg.simclr_temperature,
            ),
            dev,
        )

        def scoring_loss(m, b):
            v1, v2 = seeded_views(b, batch, cfg.seed)
            logits, z = m.forward_all(b, torch.cat([v1, v2]))
            n = b.shape[0]
            loss = nt_xent(z[:n], z[n:], cfg.simclr_temperature)
            return pixel_cross_entropy(logits, masks[batch]) + loss

        flops = train_flops_per_image(net, norm(x[batch]), scoring_loss)
        out["scoring_training"] = _phase(seconds, cfg.epochs_scoring * labeled.numel(), flops, peak)

        bs = cfg.eval_batch_size
        score_s, bare_s = [], []
        for _ in range(max(1, repeats)):
            _, s = timed(lambda: score_seg_pool(net, x[unlabeled], unlabeled, norm, bs, 0), dev)
            score_s.append(s)
            _, s = timed(lambda: bare_forward(net, x[unlabeled], norm, bs), dev)
            bare_s.append(s)
        out["scoring"] = _phase(min(score_s), unlabeled.numel())
        out["bare_forward"] = _phase(min(bare_s), unlabeled.numel())
        out["scoring_vs_bare_forward"] = min(bare_s) / min(score_s)
    out["round_seconds"] = sum(
        out[k]["seconds"] for k in ("task_training", "scoring_training", "scoring")
    )
    return out


@torch.inference_mode()
def bare_forward(net: SegScoringNet, x: torch.Tensor, normalize, batch_size: int) -> None:
    """What scoring runs, without the views' sampling and the scores: the encoder on three images
    per image, the class head upsampled to full size, the projection head on two."""
    net.eval()
    for chunk in eval_chunks(x, batch_size, passes=3):  # the same chunks as score_seg_pool
        b = chunk.shape[0]
        images = normalize(chunk)
        feats, pooled = net.encode(torch.cat([images, images, images]))
        logits = net.segnet.head(feats[:b])
        F.interpolate(logits, chunk.shape[-2:], mode="bilinear", align_corners=False)
        net.projection(pooled[b:])


def markdown(r: dict) -> str:
    m, p = r["machine"], r["pal"]
    where = m.get("gpu") or f"{m['cpus']} CPU cores ({m['cpu']})"
    s = r["settings"]
    lines = [
        f"### {r['config']} (segmentation) on {r['device']}: {where}",
        "",
        f"{r['date']}; torch {m['torch']}, {m['torch_threads']} threads; "
        f"|D_L| = {p['n_labeled']}, |D_U| = {p['n_unlabeled']}; "
        f"encoders {s['task_backbone']} / {s['scoring_backbone']}, "
        f"{s['epochs_task']} + {s['epochs_scoring']} epochs, {r['precision']}, "
        f"{r['memory_format']}.",
        "",
        "| phase | s | images/s | model TFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- |",
    ]
    for phase in ("task_training", "scoring_training", "scoring", "bare_forward"):
        a = p[phase]
        tflops = f"{a['flop_per_s'] / 1e12:.3f}" if "flop_per_s" in a else "-"
        mfu = f"{100 * a['mfu']:.1f}%" if a.get("mfu") else "-"
        lines.append(
            f"| {phase.replace('_', ' ')} | {a['seconds']:.2f} | {a['images_per_s']:.0f} | "
            f"{tflops} | {mfu} |"
        )
    lines += [
        "",
        f"- Round: {p['round_seconds']:.2f} s.",
        f"- Scoring (S_S + S_C) at **{100 * p['scoring_vs_bare_forward']:.1f}%** of the throughput "
        f"of its bare forward passes.",
    ]
    return "\n".join(lines) + "\n"
