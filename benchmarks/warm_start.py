"""PAL's scoring network warm-started from the last query's against trained from scratch.

    python -m benchmarks.warm_start                          # MNIST, 8 and 9 missing, seeds 0-2
    python -m benchmarks.warm_start --seeds 0 --set epochs_scoring_warm=10
    python -m benchmarks.warm_start --render a.json          # the table of a saved result

Per seed, the MNIST preset (``configs/mnist.yaml``) with classes 8 and 9 missing from the initial
pool is run twice through :class:`pal.loop.Experiment`, as ``pal run`` runs it: once with the
scoring network from scratch every query (the paper; ``epochs_scoring`` epochs) and once with
``epochs_scoring_warm`` set (from the second query on, the last query's network trained on for
that many epochs). The first query is from scratch in both, so both runs hold the same ``D_L``
and ``D_U`` when the second query is scored: there the two networks' ``S_S`` and their first
sub-query score ``S_S + lambda1 S_C`` are compared by Spearman's rank correlation over the same
pool, and the two queries by their overlap. Per query and run: the missing-class share, the
seconds spent training and scoring the scoring network (``score_pool``), its fit on ``D_L``; per
round, the test accuracy. Seeds run in parallel processes, one thread each. Writes
``<out>/warm_start.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.stats
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"missing_classes": ["8", "9"], "rounds": 2, "strategy": "pal"}
WARM_EPOCHS = 25  # a quarter of the preset's epochs_scoring


def run_seed(seed: int, overrides: dict, threads: int = 1) -> dict:
    """Both runs of one seed; what :func:`summarise` reads."""
    import torch

    import pal.strategies.pal as pal_strategy
    from pal.config import make_config
    from pal.loop import Experiment

    torch.set_num_threads(threads)
    preset = yaml.safe_load((CONFIGS / "mnist.yaml").read_text())
    settings = {**preset, **BASE, "seed": seed, **overrides}
    settings.setdefault("epochs_scoring_warm", WARM_EPOCHS)
    runs = {}
    real_score_pool = pal_strategy.score_pool
    for arm, warm in (("scratch", None), ("warm", settings["epochs_scoring_warm"])):
        config = make_config({**settings, "epochs_scoring_warm": warm})
        scored: list[dict] = []

        def recording(ctx, keep, start=None, _scored=scored):
            began = time.perf_counter()
            out = real_score_pool(ctx, keep, start)
            _scored.append(
                {
                    "seconds": time.perf_counter() - began,
                    "unlabeled": ctx.unlabeled.cpu().numpy(),
                    "s_s": out.scores.s_s.cpu().numpy(),
                    "score": (out.scores.s_s + ctx.config.lambda1 * out.scores.s_c).cpu().numpy(),
                    "warm": start is not None,
                }
            )
            return out

        pal_strategy.score_pool = recording
        try:
            began = time.perf_counter()
            experiment = Experiment(config)
            records = list(experiment.rounds())
            seconds = time.perf_counter() - began
        finally:
            pal_strategy.score_pool = real_score_pool
        runs[arm] = {"records": records, "scored": scored, "seconds": seconds}
    return compare(seed, runs)


def compare(seed: int, runs: dict) -> dict:
    """The figures of one seed from its two runs."""
    out: dict = {"seed": seed, "runs": {}}
    for arm, run in runs.items():
        records = run["records"]
        out["runs"][arm] = {
            "seconds": run["seconds"],
            "test_accuracy": [r.test_accuracy for r in records],
            "missing_share": [r.missing_class_share for r in records[1:]],
            "score_pool_seconds": [s["seconds"] for s in run["scored"]],
            "warm": [s["warm"] for s in run["scored"]],
            "rotation_fit": [
                r.query_metrics.get("scoring/rotation_train_accuracy", math.nan)
                for r in records[1:]
            ],
            "class_fit": [
                r.query_metrics.get("scoring/class_train_accuracy", math.nan) for r in records[1:]
            ],
            "selected": [list(map(int, r.selected)) for r in records[1:]],
        }
    a, b = runs["scratch"]["scored"], runs["warm"]["scored"]
    out["first_query_identical"] = (
        out["runs"]["scratch"]["selected"][0] == (out["runs"]["warm"]["selected"][0])
    )
    queries = []
    for q in range(1, min(len(a), len(b))):
        same_pool = bool(np.array_equal(a[q]["unlabeled"], b[q]["unlabeled"]))
        row = {"query": q + 1, "same_pool": same_pool}
        if same_pool:
            row["spearman_s_s"] = float(scipy.stats.spearmanr(a[q]["s_s"], b[q]["s_s"])[0])
            row["spearman_score"] = float(scipy.stats.spearmanr(a[q]["score"], b[q]["score"])[0])
        picks = [set(out["runs"][arm]["selected"][q]) for arm in ("scratch", "warm")]
        row["overlap"] = len(picks[0] & picks[1]) / max(len(picks[0]), 1)
        queries.append(row)
    out["queries"] = queries
    return out


def summarise(results: list[dict]) -> str:
    """The Markdown tables: per seed, then the means."""
    lines = [
        "| seed | run | trial s | scoring s per query | rotation fit per query | test accuracy "
        "per round | missing share per query |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(values, digits=3):
        return " / ".join(f"{v:.{digits}f}" for v in values)

    for r in results:
        for arm, run in r["runs"].items():
            lines.append(
                f"| {r['seed']} | {arm} | {run['seconds']:.0f} | "
                f"{fmt(run['score_pool_seconds'], 0)} | {fmt(run['rotation_fit'])} | "
                f"{fmt(run['test_accuracy'], 4)} | {fmt(run['missing_share'])} |"
            )
    lines += [
        "",
        "| seed | query | Spearman S_S | Spearman S_S + lambda1 S_C | picks in common |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for q in r["queries"]:
            if not q["same_pool"]:
                lines.append(f"| {r['seed']} | {q['query']} | (pools differ) | | |")
                continue
            lines.append(
                f"| {r['seed']} | {q['query']} | {q['spearman_s_s']:.3f} | "
                f"{q['spearman_score']:.3f} | {q['overlap']:.2f} |"
            )
    means = {}
    for arm in ("scratch", "warm"):
        runs = [r["runs"][arm] for r in results]
        means[arm] = {
            key: np.mean([run[key] for run in runs], axis=0).tolist()
            for key in ("seconds", "score_pool_seconds", "test_accuracy", "missing_share")
        }
    lines += [
        "",
        f"Means over {len(results)} seeds; first query identical in every seed: "
        f"{all(r['first_query_identical'] for r in results)}.",
        "",
        "| run | trial s | scoring s per query | test accuracy per round "
        "| missing share per query |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm, m in means.items():
        lines.append(
            f"| {arm} | {m['seconds']:.0f} | {fmt(m['score_pool_seconds'], 0)} | "
            f"{fmt(m['test_accuracy'], 4)} | {fmt(m['missing_share'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.warm_start", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--render", nargs="+", metavar="JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = [r for path in args.render for r in json.loads(Path(path).read_text())]
        print(summarise(results))
        return 0
    from pal.config import parse_override

    overrides = dict(parse_override(kv) for kv in args.set)
    jobs = max(1, min(args.jobs, len(args.seeds)))
    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_seed, seed, overrides) for seed in args.seeds]
        results = [f.result() for f in futures]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "warm_start.json").write_text(json.dumps(results, indent=1))
    table = summarise(results)
    (out / "warm_start.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
