"""Time a PAL round phase by phase, against the usual DataLoader loop; Tune overhead; GPU packing.

    python -m benchmarks                       # MNIST reference config (../shared/data/mnist.npz)
    python -m benchmarks --config mnist_study  # one round of the MNIST CPU studies' shape
    python -m benchmarks --config cifar10      # CIFAR-10 JPEGs, VGG-16 / ResNet-18 (for a GPU)
    python -m benchmarks --config cifar10_tv   # the whole round against the authors' way
    python -m benchmarks --config digits       # scikit-learn's digits: seconds, no files needed
    python -m benchmarks --config digit_scenes # segmentation (SimCLR scoring), no files needed
    python -m benchmarks --tune                # also Ray Tune's overhead and GPU packing
    python -m benchmarks --growth              # pools of 10k-200k: memory, scoring, Ray Data

Writes ``<out>/<config>-<device>.json`` and ``.md`` (default ``benchmarks/results``), with the
machine it ran on.

Each config times one round: ``D_L`` is the first ``initial_size`` images of the experiment's
unlabeled pool and ``D_U`` the rest, so ``|D_U| = pool_size - val_size - 2 initial_size``
(``--set pool_size=...`` counts the validation set and the unused initial pool). The configs
of :data:`WHOLE_ROUND` (or any classification config with ``--whole-round``) time the whole
round on both sides, the ``K - 1`` sub-query fine-tunes and re-scores included: ``cifar10_tv`` is
the reduced CIFAR-10 round the PAL authors' public code was compared on (torchvision's VGG-16-BN
and ResNet-18, a fresh copy of the whole scoring network fine-tuned before every sub-query).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

import pal
from benchmarks.floor import TARGET
from benchmarks.naive import run_naive
from benchmarks.phases import run_phases
from benchmarks.segmentation import markdown as segmentation_markdown
from benchmarks.tune_overhead import gpu_packing, tune_overhead
from pal.loop import Experiment

COMMON = ("task_training", "scoring_training", "scoring")  # phases both loops have
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PRESET = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"

# the timed round: D_L = the first `initial_size` images of the experiment's unlabeled pool,
# D_U = the rest of it
CONFIGS: dict[str, dict] = {
    "mnist": {
        "dataset": f"npz:{SHARED / 'mnist.npz'}",
        "pool_size": 10000,
        "val_size": 500,
        "initial_size": 2000,
        "query_size": 500,
        "task_backbone": "cnn",
        "scoring_backbone": "cnn",
        "epochs_task": 5,
        "epochs_scoring": 5,
        "batch_size": 64,
        "eval_batch_size": 1024,
        "subqueries": 5,
        "rounds": 1,
    },
    "mnist_study": {
        # one round of the CPU studies (ablations/_study.py's cpu_study): the MNIST preset with
        # D_L = the 2% initial pool (190 images), the preset's epochs, batch and rates
        **{k: v for k, v in yaml.safe_load(PRESET.read_text()).items() if k != "dataset"},
        "dataset": f"npz:{SHARED / 'mnist.npz'}",
        "rounds": 1,
    },
    "cifar10": {
        "dataset": f"folder:{SHARED / 'cifar10-jpeg.tar.gz'}",
        "val_size": 5000,
        "initial_size": 5000,
        "query_size": 2500,
        "task_backbone": "vgg16",
        "scoring_backbone": "resnet18",
        "epochs_task": 5,
        "epochs_scoring": 5,
        "batch_size": 128,
        "eval_batch_size": 2048,
        "subqueries": 5,
        "rounds": 1,
    },
    "cifar10_tv": {
        # the authors' nets and settings on a reduced round: a pool of 1280, 128 labeled and
        # 1152 unlabeled (pool_size 1536 = those + 128 validation images + the experiment's
        # own initial pool of 128, which the round leaves aside), a query of 60 in K = 5
        # sub-queries; the scoring network is fine-tuned whole, from a fresh copy before every
        # sub-query, 5 epochs at 0.1 x its rate (their code); one validation check per network,
        # as their code makes in a round this short. Inference chunks are pal's own rule's.
        "dataset": f"folder:{SHARED / 'cifar10-jpeg.tar.gz'}",
        "pool_size": 1536,
        "val_size": 128,
        "initial_size": 128,
        "query_size": 60,
        "task_backbone": "vgg16_tv",
        "scoring_backbone": "resnet18_tv",
        "epochs_task": 4,
        "epochs_scoring": 4,
        "lr_task": 0.01,
        "lr_scoring": 0.01,
        "optimizer": "sgd",
        "batch_size": 64,
        "subqueries": 5,
        "finetune_scope": "all",
        "finetune_start": "restart",
        "finetune_epochs": 5,
        "finetune_lr_factor": 0.1,
        "val_checks": 1,
        "rounds": 1,
    },
    "digit_scenes": {
        "dataset": "digit_scenes",
        "task_backbone": "segcnn",
        "scoring_backbone": "segcnn",
        "val_size": 100,
        "initial_size": 200,
        "query_size": 50,
        "epochs_task": 3,
        "epochs_scoring": 3,
        "batch_size": 32,
        "eval_batch_size": 256,
        "lambda1": 0.5,
        "lambda2": 0.0,
        "rounds": 1,
    },
    "digits": {
        "dataset": "digits",
        "pool_size": 1000,
        "val_size": 50,
        "initial_size": 300,
        "query_size": 50,
        "epochs_task": 2,
        "epochs_scoring": 2,
        "subqueries": 3,
        "rounds": 1,
    },
}
WHOLE_ROUND = {"cifar10_tv"}  # configs timed phase by phase over the whole round, both sides
TARGETS = {"whole_round_fp32": 2.5, "whole_round_bf16": 4.0, "rescoring_vs_bare_forward": 0.85}


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(
    config_name: str,
    out_dir: Path,
    with_tune: bool,
    device: str,
    overrides: dict,
    whole_round: bool | None = None,
) -> dict:
    """Time ``config_name`` (with ``overrides``) on ``device``; write and return the result.
    ``whole_round``: time the sub-queries on both sides too (default: for :data:`WHOLE_ROUND`)."""
    base = {**CONFIGS[config_name], "device": device, **overrides}
    whole = config_name in WHOLE_ROUND if whole_round is None else whole_round
    experiment = Experiment(pal.make_config(base))
    n_labeled = experiment.initial_size
    n_unlabeled = len(experiment.pool.unlabeled) - n_labeled
    if n_unlabeled < experiment.query_size:
        raise pal.ConfigError(
            f"pool_size: the timed round's D_U would hold {n_unlabeled} images, fewer than the "
            f"query of {experiment.query_size}; |D_U| = pool_size - val_size - 2 initial_size"
        )
    result = {
        "config": config_name,
        "settings": experiment.config.to_dict(),
        "device": str(experiment.device),
        "precision": experiment.runtime.precision,
        "memory_format": "channels_last"
        if experiment.runtime.memory_format == torch.channels_last
        else "contiguous",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    result["pal"] = run_phases(experiment, n_labeled, repeats=3, evaluate=True)
    if experiment.task.kind == "classification":  # the naive reference loop is for it alone
        result["naive"] = run_naive(experiment, n_labeled, repeats=3, subqueries=whole)
        pal_s = sum(result["pal"][p]["seconds"] for p in COMMON)
        naive_s = sum(result["naive"][p]["seconds"] for p in COMMON)
        result["speedup_vs_naive"] = naive_s / pal_s
        if whole:
            pal_round, naive_round = (
                result["pal"]["round_seconds"],
                result["naive"]["round_seconds"],
            )
            result["whole_round"] = {
                "pal_seconds": pal_round,
                "naive_seconds": naive_round,
                "speedup": naive_round / pal_round,
                "target": TARGETS[f"whole_round_{result['precision']}"],
            }
    if with_tune:
        tune_base = {**base, "rounds": 2}
        result["tune_overhead"] = tune_overhead(tune_base, cpus=os.cpu_count() or 1)
        result["gpu_packing"] = gpu_packing({**base, "rounds": 1})
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{config_name}-{experiment.device.type}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(render(result))
    return result


def render(result: dict) -> str:
    """The Markdown table of a result (segmentation configs have no naive reference)."""
    if "whole_round" in result:
        return whole_round_markdown(result)
    return markdown(result) if "naive" in result else segmentation_markdown(result)


def markdown(r: dict) -> str:
    m, p, n = r["machine"], r["pal"], r["naive"]
    where = m.get("gpu") or f"{m['cpus']} CPU cores ({m['cpu']})"
    lines = [
        f"### {r['config']} on {r['device']}: {where}",
        "",
        f"{r['date']}; torch {m['torch']}, {m['torch_threads']} threads; "
        f"|D_L| = {p['n_labeled']}, |D_U| = {p['n_unlabeled']}; "
        f"backbones {r['settings']['task_backbone']} / {r['settings']['scoring_backbone']}, "
        f"{r['settings']['epochs_task']} + {r['settings']['epochs_scoring']} epochs, "
        f"{r['precision']}, {r['memory_format']}.",
        "",
        "| phase | pal s | pal images/s | naive s | naive images/s | speed-up | model TFLOP/s "
        "| MFU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in ("task_training", "scoring_training", "scoring"):
        a, b = p[phase], n[phase]
        tflops = f"{a['flop_per_s'] / 1e12:.3f}" if "flop_per_s" in a else "-"
        mfu = f"{100 * a['mfu']:.1f}%" if a.get("mfu") else "-"
        lines.append(
            f"| {phase.replace('_', ' ')} | {a['seconds']:.2f} | {a['images_per_s']:.0f} | "
            f"{b['seconds']:.2f} | {b['images_per_s']:.0f} | {b['seconds'] / a['seconds']:.2f}x | "
            f"{tflops} | {mfu} |"
        )
    sub = p["subquery_finetune"]
    pal_s, naive_s = (sum(d[k]["seconds"] for k in COMMON) for d in (p, n))
    lines += [
        f"| sub-query fine-tunes ({sub['steps']}, scope {sub['scope']}) | {sub['seconds']:.2f} "
        "| - | - | - | - | - | - |",
        "",
        f"- Round (the three common phases): pal {pal_s:.2f} s, naive {naive_s:.2f} s: "
        f"**{r['speedup_vs_naive']:.2f}x** faster.",
        f"- Scoring (S_S + S_C) at **{100 * p['scoring_vs_bare_forward']:.1f}%** of the throughput "
        f"of its bare forward passes ({p['bare_forward']['images_per_s']:.0f} images/s bare, "
        f"{p['scoring']['images_per_s']:.0f} scored).",
    ]
    lines += floor_lines(r)
    lines += tune_lines(r)
    return "\n".join(lines) + "\n"


FLOOR_ROWS = (
    ("task training", "task_training"),
    ("evaluation (validation + test)", "evaluation"),
    ("scoring training", "scoring_training"),
    ("scoring the pool", "scoring"),
    ("sub-query fine-tunes", "finetunes"),
    ("re-scorings", "rescoring"),
)
TRAINING_PHASES = ("task_training", "scoring_training", "finetunes")


def floor_lines(r: dict) -> list[str]:
    """Each phase against its floor (:mod:`benchmarks.floor`): pal's seconds, the bare loop's,
    and the floor's share of pal's time (:data:`benchmarks.floor.TARGET` for training)."""
    p = r["pal"]
    rows = [(label, key) for label, key in FLOOR_ROWS if "floor_seconds" in p.get(key, {})]
    if not rows:
        return []
    lines = [
        "",
        f"Each phase against its floor, a bare PyTorch loop doing the same network arithmetic on "
        f"the same tensors ({r['precision']}):",
        "",
        "| phase | pal s | floor s | floor / pal |",
        "| --- | --- | --- | --- |",
    ]
    for label, key in rows:
        a = p[key]
        lines.append(
            f"| {label} | {a['seconds']:.2f} | {a['floor_seconds']:.2f} | {a['floor_share']:.2f} |"
        )
    below = [key for key in TRAINING_PHASES if p.get(key, {}).get("floor_share", 1.0) < TARGET]
    names = ", ".join(key.replace("_", " ") for key in below)
    lines += [
        "",
        f"- Training phases at >= {TARGET:g} of their floor: "
        + ("all" if not below else f"not {names}")
        + ".",
    ]
    return lines


def whole_round_markdown(r: dict) -> str:
    """The whole round, phase by phase, pal against the naive reference (the authors' way)."""
    m, p, n, w, cfg = r["machine"], r["pal"], r["naive"], r["whole_round"], r["settings"]
    where = m.get("gpu") or f"{m['cpus']} CPU cores ({m['cpu']})"
    sub = p["subquery_finetune"]
    steps = sub["steps"]
    lines = [
        f"### {r['config']}: the whole round on {r['device']}: {where}",
        "",
        f"{r['date']}; torch {m['torch']}, {m['torch_threads']} threads; "
        f"|D_L| = {p['n_labeled']}, |D_U| = {p['n_unlabeled']}, a query of "
        f"{cfg['query_size']} in K = {cfg['subqueries']} sub-queries; backbones "
        f"{cfg['task_backbone']} / {cfg['scoring_backbone']}, {cfg['epochs_task']} + "
        f"{cfg['epochs_scoring']} epochs, {cfg['optimizer']} at {cfg['lr_task']:g} / "
        f"{cfg['lr_scoring']:g}, batch {cfg['batch_size']}; fine-tunes: scope {sub['scope']}, "
        f"{sub['start']}, {sub['epochs']} epochs at {cfg['finetune_lr_factor']:g} x lr_scoring; "
        f"pal {r['precision']}, {r['memory_format']}; naive fp32.",
        "",
        "| phase | pal s | naive s | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    rows = [
        ("task training", "task_training"),
        ("scoring training", "scoring_training"),
        (f"first scoring ({p['n_unlabeled']} images)", "scoring"),
        (f"sub-query fine-tunes ({steps})", "finetunes"),
        (f"re-scorings of the remaining pool ({steps})", "rescoring"),
    ]
    for label, key in rows:
        if key not in p or key not in n:
            continue
        a, b = p[key]["seconds"], n[key]["seconds"]
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    lines += [
        f"| **whole round** | **{w['pal_seconds']:.2f}** | **{w['naive_seconds']:.2f}** | "
        f"**{w['speedup']:.2f}x** |",
        "",
        f"- Whole round: pal {w['pal_seconds']:.2f} s, naive {w['naive_seconds']:.2f} s: "
        f"**{w['speedup']:.2f}x** faster (target for {r['precision']}: >= {w['target']:g}x).",
    ]
    if "rescoring_vs_bare_forward" in p:
        target = TARGETS["rescoring_vs_bare_forward"]
        lines.append(
            f"- Re-scoring at **{100 * p['rescoring_vs_bare_forward']:.1f}%** of the throughput "
            f"of its bare forward passes (target: >= {100 * target:.0f}%; "
            f"{p['rescoring_bare_forward']['images_per_s']:.0f} images/s bare, "
            f"{p['rescoring']['images_per_s']:.0f} re-scored)."
        )
    lines.append(
        f"- First scoring (S_S + S_C) at **{100 * p['scoring_vs_bare_forward']:.1f}%** of the "
        f"throughput of its bare forward passes ({p['bare_forward']['images_per_s']:.0f} "
        f"images/s bare, {p['scoring']['images_per_s']:.0f} scored)."
    )
    lines += floor_lines(r)
    lines += tune_lines(r)
    return "\n".join(lines) + "\n"


def tune_lines(r: dict) -> list[str]:
    """The Ray Tune overhead and GPU packing lines, when measured."""
    lines: list[str] = []
    if "tune_overhead" in r:
        t = r["tune_overhead"]
        lines.append(
            f"- Ray Tune: the trial took {t['trial_seconds']:.1f} s against "
            f"{t['plain_seconds']:.1f} s for `pal.run_experiment` "
            f"(**{100 * t['trial_overhead']:+.1f}%**); the whole sweep with Ray's start-up "
            f"{t['sweep_wall_seconds']:.1f} s ({100 * t['sweep_overhead']:+.1f}%)."
        )
        g = r["gpu_packing"]
        if "skipped" in g:
            lines.append(f"- GPU packing: skipped ({g['skipped']}).")
        else:
            lines.append(
                f"- GPU packing: {g['packed']['trials_per_hour']:.1f} trials/h at "
                f"gpus_per_trial={g['packed']['gpus_per_trial']:g} against "
                f"{g['one_at_a_time']['trials_per_hour']:.1f} one at a time ({g['speedup']:.2f}x)."
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mnist")
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for the JSON and Markdown"
    )
    parser.add_argument("--tune", action="store_true", help="also Tune overhead and GPU packing")
    parser.add_argument(
        "--whole-round",
        action="store_true",
        default=None,
        help="time the sub-query fine-tunes and re-scores on both sides too (on for "
        + ", ".join(sorted(WHOLE_ROUND))
        + ")",
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="instead: how memory and scoring time grow with the pool (benchmarks.growth)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --growth: keep the measurements an interrupted run finished",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set precision=fp32",
    )
    args = parser.parse_args(argv)
    if args.growth:
        from benchmarks.growth import markdown as growth_markdown
        from benchmarks.growth import run_growth

        device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
        device = "cpu" if device == "auto" else device
        print(growth_markdown(run_growth(Path(args.out), device, resume=args.resume)))
        return 0
    base = CONFIGS[args.config]
    path = base["dataset"].split(":", 1)[-1]
    if ":" in base["dataset"] and not Path(path).exists():
        print(f"benchmarks: {path} is absent; use --config digits", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(pal.config.parse_override(item) for item in args.set)
    try:
        result = run(
            args.config, Path(args.out), args.tune, args.device, overrides, args.whole_round
        )
    except pal.ConfigError as err:
        print(f"benchmarks: {err}", file=sys.stderr)
        return 2
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
