"""How much the candidate pre-filter (``candidate_pool``) changes a query, on MNIST.

    python -m benchmarks.prefilter                        # MNIST preset, PAL, 3 seeds
    python -m benchmarks.prefilter --strategy entropy --seeds 0 1

For each seed, the preset runs one round (``rounds=1``) with the whole unlabeled pool scored and
with ``candidate_pool`` = each of ``--sizes``: round 0 is the same for all of them (the same seed),
so the first query differs only by the pre-filter. Reported per size: the share of the full-pool
query the pre-filtered query kept, the share of the full-pool query that was among the candidates
at all (the most it could keep), the query's seconds, and round 1's test accuracy (trained on the
initial pool plus that query) against the full-pool query's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_one(config, candidate_pool: int | None) -> dict:
    from pal.loop import Experiment
    from pal.pool import draw_candidates

    experiment = Experiment(config.replace(candidate_pool=candidate_pool, rounds=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = experiment.run_round()
        unlabeled = experiment.pool.unlabeled
        candidates = draw_candidates(unlabeled, candidate_pool, config.seed, 1)
        second = experiment.run_round()
    return {
        "candidate_pool": candidate_pool,
        "n_unlabeled": len(unlabeled),
        "query": second.selected,
        "candidates": candidates.tolist(),
        "query_seconds": second.query_seconds,
        "round0_test_accuracy": first.test_accuracy,
        "round1_test_accuracy": second.test_accuracy,
        "query_class_rates": second.query_class_rates,
    }


def compare(full: dict, other: dict) -> dict:
    q_full, q = set(full["query"]), set(other["query"])
    n = len(q_full)
    return {
        "candidate_pool": other["candidate_pool"],
        "kept": len(q_full & q) / n,
        "reachable": len(q_full & set(other["candidates"])) / n,
        "query_seconds": other["query_seconds"],
        "full_query_seconds": full["query_seconds"],
        "accuracy_diff": other["round1_test_accuracy"] - full["round1_test_accuracy"],
        "round1_test_accuracy": other["round1_test_accuracy"],
        "full_round1_test_accuracy": full["round1_test_accuracy"],
    }


def main(argv: list[str] | None = None) -> int:
    import pal

    parser = argparse.ArgumentParser(prog="python -m benchmarks.prefilter")
    parser.add_argument("--config", default="configs/mnist.yaml")
    parser.add_argument("--strategy", default="pal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 1000, 400])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    args = parser.parse_args(argv)
    overrides = dict(pal.config.parse_override(item) for item in args.set)
    if "dataset" not in overrides:
        mnist = SHARED / "mnist.npz"
        if not mnist.is_file():
            print(f"benchmarks: {mnist} is absent", file=sys.stderr)
            return 2
        overrides["dataset"] = f"npz:{mnist}"
    base = pal.make_config(args.config, strategy=args.strategy, **overrides)
    rows = []
    for seed in args.seeds:
        cfg = base.replace(seed=seed)
        full = run_one(cfg, None)
        for size in args.sizes:
            row = {"seed": seed, **compare(full, run_one(cfg, size))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for size in args.sizes:
        mine = [r for r in rows if r["candidate_pool"] == size]
        summary[size] = {
            key: float(np.mean([r[key] for r in mine]))
            for key in ("kept", "reachable", "query_seconds", "full_query_seconds")
        }
        diffs = [r["accuracy_diff"] for r in mine]
        summary[size]["accuracy_diff_mean"] = float(np.mean(diffs))
        summary[size]["accuracy_diff_min"] = float(np.min(diffs))
        summary[size]["accuracy_diff_max"] = float(np.max(diffs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": args.config,
        "strategy": args.strategy,
        "seeds": args.seeds,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
        "summary": summary,
    }
    stem = out / f"prefilter-{args.strategy}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [
        f"| candidate_pool | of the full query kept | in the candidates at all | query s "
        f"(full pool s) | round-1 test accuracy - full pool's (points, mean [min, max] over "
        f"{len(result['seeds'])} seeds) |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for size, s in result["summary"].items():
        lines.append(
            f"| {size} | {s['kept']:.0%} | {s['reachable']:.0%} | {s['query_seconds']:.1f} "
            f"({s['full_query_seconds']:.1f}) | {100 * s['accuracy_diff_mean']:+.2f} "
            f"[{100 * s['accuracy_diff_min']:+.2f}, {100 * s['accuracy_diff_max']:+.2f}] |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
