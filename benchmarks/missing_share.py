"""PAL's first query with classes missing from the initial pool, term by term (Section 4.5).

    python -m benchmarks.missing_share                       # every setting whose data is here
    python -m benchmarks.missing_share --settings digits --seeds 0 1
    python -m benchmarks.missing_share --settings fashion_mnist --data-dir ~/data
    python -m benchmarks.missing_share --render a.json b.json   # tables from saved results

A setting is a dataset and the two classes missing from its initial pool (:data:`SETTINGS`).
For each setting and seed the experiment is set up as ``pal run`` sets it up (the library's
defaults, ``cnn`` networks, 10% labeled at start, a 5% query) and the scoring network is
trained once on ``D_L``; every variant's query is then taken on that one network by
:func:`pal.strategies.pal.select`, the code PAL's query runs (the variants differ only in
``lambda1``, ``lambda2``, ``score_norm`` and the fine-tune, none of which the network's
training reads). Random's query is the ``random`` strategy's, on the same pools.

Per variant: the first query's missing-class share (mean over seeds, 95% t interval, ratio to
random's), and the query metrics that say which term ranked the query: the Spearman of the
first sub-query's score with ``S_S`` and with ``S_C``, the mean Spearman of each later
sub-query's score with ``S_D``, and ``sd_finetune_changed``. Per setting, how well ``S_S`` and
``S_C`` rank the missing classes first over the whole pool (AUROC). Writes
``<out>/missing_share.json`` and ``.md``: one table per setting and one across the settings.
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
from pal.data import DataError, ImageData, load_dataset
from pal.loop import Experiment
from pal.stats import paired_t_interval
from pal.strategies import build_strategy
from pal.strategies.pal import score_pool, select
from pal.verdicts import column_nanmean

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10 = {"dataset": f"folder:{SHARED / 'cifar10-jpeg.tar.gz'}", "pool_size": 6000}
FASHION = {"dataset": "fashion_mnist", "pool_size": 6000}  # torchvision's, under --data-dir
FIT = {"epochs_scoring": 100, "model_selection": "last"}
SETTINGS = {
    "digits": {"dataset": "digits", "missing_classes": ["8", "9"]},
    "mnist": {
        "dataset": f"npz:{SHARED / 'mnist.npz'}",
        "pool_size": 6000,
        "missing_classes": ["8", "9"],
    },
    "fashion_mnist": {**FASHION, "missing_classes": ["Bag", "Ankle boot"]},
    "fashion_mnist_tops": {**FASHION, "missing_classes": ["Pullover", "Shirt"]},
    "cifar10": {**CIFAR10, "missing_classes": ["ship", "truck"]},
    "cifar10_pets": {**CIFAR10, "missing_classes": ["cat", "dog"]},
    "cifar10_fit": {**CIFAR10, "missing_classes": ["ship", "truck"], **FIT},
}
"""The settings measured: a dataset and its missing classes, as config keys on the library's
defaults (``--set`` adds more). ``cifar10_fit`` trains the scoring network 100 epochs, not 30,
and keeps the last (the default keeps the epoch of lowest validation loss)."""
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
    out["missing_classes"] = list(config.missing_classes)
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
                "class_rates": exp.task.class_rates(picked),
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
    """The mean of ``values`` over the finite ones (NaN for none), as the reports take it."""
    return float(column_nanmean(np.asarray(list(values), dtype=float).reshape(-1, 1))[0])


def markdown(setting: str, rows: dict[str, dict], seeds: list[dict]) -> str:
    """One setting's table: share, interval, ratio to random and the ranking metrics."""
    fit = {
        k: _mean([s["scoring"].get(f"scoring/{k}", math.nan) for s in seeds])
        for k in ("rotation_train_accuracy", "class_train_accuracy")
    }
    ranking = {t: _mean([s["auroc"][t] for s in seeds]) for t in ("S_S", "S_C")}
    lines = [
        f"### {setting}: {seeds[0]['n_query']} queried of {seeds[0]['n_unlabeled']}, "
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
    return "\n".join(lines + ["", *by_class(seeds)]) + "\n"


BY_CLASS = ("S_S", "S_S+S_C none", "S_S+S_C+S_D none ft:new")
"""The variants whose queries :func:`by_class` breaks down: each term alone, and the defaults."""


def by_class(seeds: list[dict]) -> list[str]:
    """Which classes the queries of :data:`BY_CLASS` took (mean share over seeds; the missing
    classes starred), as markdown lines."""
    names = [n for n in BY_CLASS if n in seeds[0]["variants"]]
    if not names:
        return []
    classes = list(seeds[0]["variants"][names[0]]["class_rates"])
    missing = set(seeds[0]["missing_classes"])
    head = [f"{c}*" if c in missing else c for c in classes]
    lines = [
        "Which classes the query took (mean share over seeds; * missing at start):",
        "",
        "| variant | " + " | ".join(head) + " |",
        "| --- |" + " --- |" * len(classes),
    ]
    for name in names:
        rates = [
            _mean([s["variants"][name]["class_rates"].get(c, 0.0) for s in seeds]) for c in classes
        ]
        lines.append(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")
    return lines


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.2f}"


def across(results: dict[str, dict]) -> str:
    """One table over the settings: per variant the mean share and its ratio to random's; below
    it, each term's AUROC for the missing classes and the scoring network's rotation accuracy."""
    names = list(results)
    variants = list(next(iter(results.values()))["summary"])
    lines = [
        "| variant | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for v in variants:
        cells = [results[n]["summary"][v] for n in names]
        lines.append(
            f"| {v} | "
            + " | ".join(f"{c['mean']:.3f} ({c['vs_random']:.2f}x)" for c in cells)
            + " |"
        )
    for term in ("S_S", "S_C"):
        values = [_mean([s["auroc"][term] for s in results[n]["seeds"]]) for n in names]
        lines.append(f"| AUROC of {term} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    key = "scoring/rotation_train_accuracy"
    fits = [_mean([s["scoring"].get(key, math.nan) for s in results[n]["seeds"]]) for n in names]
    lines.append("| rotation accuracy on D_L | " + " | ".join(f"{v:.3f}" for v in fits) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, dict], out_dir: Path) -> None:
    """``missing_share.json`` and ``.md`` (the table across the settings, then one per
    setting) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "missing_share.json").write_text(json.dumps(results, indent=1))
    texts = [markdown(n, r["summary"], r["seeds"]) for n, r in results.items()]
    (out_dir / "missing_share.md").write_text("\n".join([across(results), *texts]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", default="data", help="where torchvision's datasets are")
    parser.add_argument("--render", nargs="+", metavar="JSON", help="tables from saved results")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    if args.render:
        results = {}
        for path in args.render:
            results.update(json.loads(Path(path).read_text()))
        write(results, out_dir)
        print((out_dir / "missing_share.md").read_text())
        return
    extra = {"data_dir": args.data_dir, **dict(parse_override(s) for s in args.set)}
    variants = term_variants()
    results = {}
    for name in args.settings:
        base = {**SETUP, **SETTINGS[name], **extra}
        config = make_config(base)
        try:
            data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size)
        except DataError as err:
            print(f"{name}: skipped ({err})", flush=True)
            continue
        seeds = []
        for seed in args.seeds:
            start = time.perf_counter()
            seeds.append(measure(make_config(base, seed=seed), variants, data))
            shares = {k: v["share"] for k, v in seeds[-1]["variants"].items()}
            print(
                f"{name} seed {seed}: {time.perf_counter() - start:.0f} s, missing-class share "
                f"random {seeds[-1]['random']:.3f}, "
                + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()),
                flush=True,
            )
            # saved after every seed: a stopped run keeps the seeds it measured
            results[name] = {"config": base, "seeds": seeds, "summary": summary(seeds)}
            write(results, out_dir)
        if seeds:
            print(markdown(name, results[name]["summary"], seeds), flush=True)


if __name__ == "__main__":
    main()
