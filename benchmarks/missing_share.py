"""PAL's first query with classes missing from the initial pool, term by term (Section 4.5).

    python -m benchmarks.missing_share                         # digits, CIFAR-10, MNIST; 3 seeds
    python -m benchmarks.missing_share --datasets digits --seeds 0 1

For each dataset and seed the experiment is set up as ``pal run`` sets it up (the library's
defaults, ``cnn`` networks, 10% labeled at start with the dataset's last two classes missing, a
5% query) and the scoring network is trained once on ``D_L``; every variant's query is then
taken on that one network by :func:`pal.strategies.pal.select`, the code PAL's query runs
(the variants differ only in ``lambda1``, ``lambda2``, ``score_norm`` and the fine-tune, none
of which the network's training reads). Random's query is the ``random`` strategy's, on the
same pools.

Per variant: the first query's missing-class share (mean over seeds, 95% t interval, ratio to
random's), and the query metrics that say which term ranked the query: the Spearman of the
first sub-query's score with ``S_S`` and with ``S_C``, the mean Spearman of each later
sub-query's score with ``S_D``, and ``sd_finetune_changed``. Writes ``<out>/missing_share.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import scipy.stats

from pal.config import Config, make_config, parse_override
from pal.data import ImageData, load_dataset
from pal.loop import Experiment
from pal.stats import paired_t_interval
from pal.strategies import build_strategy
from pal.strategies.pal import score_pool, select

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "digits": {"dataset": "digits"},
    "cifar10": {"dataset": f"folder:{SHARED / 'cifar10-jpeg.tar.gz'}", "pool_size": 6000},
    "mnist": {"dataset": f"npz:{SHARED / 'mnist.npz'}", "pool_size": 6000},
    "fashion_mnist": {"dataset": "fashion_mnist", "pool_size": 6000},  # under data_dir
}
"""The datasets measured, as config keys on the library's defaults (``--set`` adds more)."""
SETUP = {"initial_fraction": 0.1, "query_fraction": 0.05, "rounds": 1, "task_backbone": "cnn"}

FINETUNES = {
    "old": {"finetune_epochs": 5, "finetune_lr_factor": 0.1},  # the authors' rate
    "new": {"finetune_epochs": 20, "finetune_lr_factor": 1.0},
}
TERMS = {
    "S_S": {"lambda1": 0.0, "lambda2": 0.0},
    "S_S+S_C": {"lambda1": 1.0, "lambda2": 0.0},
    "S_S+S_D": {"lambda1": 0.0, "lambda2": 1.0},
    "S_S+S_C+S_D": {"lambda1": 1.0, "lambda2": 1.0},
}


def term_variants() -> dict[str, dict]:
    """Every term combination under every ``score_norm``, and, where ``S_D`` is used, under
    the old and the new fine-tune. ``S_S`` alone is one variant: a norm keeps its order."""
    out: dict[str, dict] = {"S_S": {**TERMS["S_S"], "score_norm": "none"}}
    for terms, weights in TERMS.items():
        if terms == "S_S":
            continue
        for norm in ("none", "zscore", "rank"):
            fts = FINETUNES if weights["lambda2"] else {"": {}}
            for ft, keys in fts.items():
                name = f"{terms} {norm}" + (f" ft:{ft}" if ft else "")
                out[name] = {**weights, "score_norm": norm, **keys}
    return out


def measure(config: Config, variants: dict[str, dict], data: ImageData | None = None) -> dict:
    """One seed: random's share and, per variant, the share and the query metrics of PAL's
    first query, all variants on one trained scoring network."""
    exp = Experiment(config, data)
    missing = exp.missing_class_ids
    ctx = exp.query_context(1)
    n = exp.query_size
    out: dict = {"seed": config.seed, "n_query": n, "n_unlabeled": int(ctx.unlabeled.numel())}
    with exp.runtime.autocast():
        rand = build_strategy(config.replace(strategy="random")).query(ctx, n).indices
        out["random"] = exp.task.missing_share(rand.cpu().numpy(), missing)
        pool_share = exp.task.missing_share(ctx.unlabeled.cpu().numpy(), missing)
        out["pool"] = pool_share
        start = time.perf_counter()
        scored = score_pool(ctx, keep=True)
        out["scoring_seconds"] = time.perf_counter() - start
        out["scoring"] = {k: float(v) for k, v in scored.metrics.items()}
        is_missing = np.isin(exp.task.y_true[ctx.unlabeled.cpu().numpy()], missing)
        out["auroc"] = {
            term: auroc(getattr(scored.scores, key).cpu().numpy(), is_missing)
            for term, key in (("S_S", "s_s"), ("S_C", "s_c"))
        }
        out["variants"] = {}
        for name, keys in variants.items():
            vctx = dataclasses.replace(ctx, config=config.replace(**keys))
            selection = select(scored, vctx, n)
            picked = ctx.unlabeled[selection.picked].cpu().numpy()
            out["variants"][name] = {
                "share": exp.task.missing_share(picked, missing),
                "picked": picked.tolist(),
                **{k: float(v) for k, v in selection.diagnostics.items()},
            }
    return out


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """How well ``score [U]`` ranks the ``positive [U]`` samples (the missing classes) above
    the rest: the probability that a random positive outscores a random negative (ties count
    half); 0.5 is chance, below 0.5 the score prefers the known classes."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = scipy.stats.rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summary(seeds: list[dict]) -> dict[str, dict]:
    """Per variant (and ``random``): mean share over seeds, its 95% t interval, the ratio of
    means to random's, and the mean of each ranking metric."""
    random = np.array([s["random"] for s in seeds])
    rows = {"random": _row(random, random)}
    for name in seeds[0]["variants"]:
        per = [s["variants"][name] for s in seeds]
        row = _row(np.array([p["share"] for p in per]), random)
        for key in ("score_ss_spearman", "score_sc_spearman", "sd_finetune_changed"):
            row[key] = _mean([p.get(key, math.nan) for p in per])
        row["score_sd_spearman"] = _mean(
            [_mean([v for k, v in p.items() if k.startswith("score_sd_spearman/")]) for p in per]
        )
        rows[name] = row
    return rows


def _row(shares: np.ndarray, random: np.ndarray) -> dict:
    mean, low, high = (float(v[0]) for v in paired_t_interval(shares[:, None]))
    return {
        "shares": shares.tolist(),
        "mean": mean,
        "ci": [low, high],
        "vs_random": mean / float(random.mean()) if random.mean() > 0 else math.nan,
    }


def _mean(values) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def markdown(dataset: str, rows: dict[str, dict], seeds: list[dict]) -> str:
    """One dataset's table: share, interval, ratio to random and the ranking metrics."""
    fit = {
        k: _mean([s["scoring"].get(f"scoring/{k}", math.nan) for s in seeds])
        for k in ("rotation_train_accuracy", "class_train_accuracy")
    }
    ranking = {t: _mean([s["auroc"][t] for s in seeds]) for t in ("S_S", "S_C")}
    lines = [
        f"### {dataset}: {seeds[0]['n_query']} queried of {seeds[0]['n_unlabeled']}, "
        f"missing classes {_mean([s['pool'] for s in seeds]):.3f} of the pool, "
        f"{len(seeds)} seeds",
        "",
        f"Scoring network on D_L (mean): rotation {fit['rotation_train_accuracy']:.3f}, "
        f"class {fit['class_train_accuracy']:.3f}. How well each term ranks the missing "
        f"classes first (AUROC, 0.5 = chance): S_S {ranking['S_S']:.2f}, "
        f"S_C {ranking['S_C']:.2f}.",
        "",
        "| variant | share | 95% interval | vs random | score~S_S | score~S_C | score~S_D "
        "| fine-tune changed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        cells = [
            f"{r['mean']:.3f}",
            f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]",
            f"{r['vs_random']:.2f}x",
            *(
                _fmt(r.get(k, math.nan))
                for k in (
                    "score_ss_spearman",
                    "score_sc_spearman",
                    "score_sd_spearman",
                    "sd_finetune_changed",
                )
            ),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    extra = dict(parse_override(s) for s in args.set)
    variants = term_variants()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, texts = {}, []
    for dataset in args.datasets:
        base = {**SETUP, **DATASETS[dataset], **extra}
        config = make_config(base)
        data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size)
        if not config.missing_classes:
            base["missing_classes"] = list(data.classes[-2:])
        seeds = []
        for seed in args.seeds:
            config = make_config(base, seed=seed)
            start = time.perf_counter()
            seeds.append(measure(config, variants, data))
            shares = {k: v["share"] for k, v in seeds[-1]["variants"].items()}
            print(
                f"{dataset} seed {seed}: {time.perf_counter() - start:.0f} s, missing-class share "
                f"random {seeds[-1]['random']:.3f}, "
                + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()),
                flush=True,
            )
        rows = summary(seeds)
        results[dataset] = {"config": base, "seeds": seeds, "summary": rows}
        texts.append(markdown(dataset, rows, seeds))
        print(texts[-1], flush=True)
        (out_dir / "missing_share.json").write_text(json.dumps(results, indent=1))
        (out_dir / "missing_share.md").write_text("\n".join(texts))


if __name__ == "__main__":
    main()
