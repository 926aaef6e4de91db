"""The label-free first batch of ``pal label next``: its seconds and how it covers the classes.

    python -m benchmarks.first_batch                                   # every pool found
    python -m benchmarks.first_batch --pool demo --strategy typiclust --seeds 10
    python -m benchmarks.first_batch --strategy coreset --seeds 1 --out coreset.json

For each pool, label-free strategy and seed, a fresh project (``pal.labeling.setup.init_project``
in a temporary folder, ``--set seed=S``) chooses its first batch with
``pal.labeling.rounds.next_batch(project, n, strategy=NAME)``, the code ``pal label next`` runs,
and the batch is scored against the pool's true labels (an answers CSV, never shown to the
strategy):

- seconds: ``round.json``'s ``seconds.total`` (the whole ``next``, the pool's load from the
  decode cache included) and ``seconds.query`` (the strategy's choice); ``init`` decodes and
  caches the pool beforehand and is not counted;
- classes covered (of the pool's);
- the chi-square statistic ``sum_k (c_k - n p_k)^2 / (n p_k)`` of the batch's class counts
  ``c_k`` against the pool's class shares ``p_k`` (0: the pool's mix exactly), against the same
  statistic over ``--draws`` seeded random draws of ``n`` pool images without replacement
  (multivariate hypergeometric): their median, and the batch's percentile among them (the share
  of random draws at most as far from the pool's mix; below 50: more balanced than a typical
  random draw) and its p-value (the share at least as far).

Pools, each a manifest of image files with its answers (the true labels of the pool rows):
``demo`` (``pal label demo``'s digits, 1,200 8x8 PNGs, no file needed), ``cifar`` (3,000
CIFAR-10 training JPEGs, 300 a class, from ``../shared/data/cifar10-jpeg.tar.gz``, with 10 a
class for validation and 50 test JPEGs a class) and ``mnist`` (3,000 MNIST training images of
``../shared/data/mnist.npz`` written as PNGs, with 100 for validation and 500 test images), both
seeded draws; a pool whose file is absent is skipped. Prints a Markdown table and writes JSON
(``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
POOLS = {  # name -> the file it is drawn from (the demo needs none)
    "demo": None,
    "cifar": SHARED / "cifar10-jpeg.tar.gz",
    "mnist": SHARED / "mnist.npz",
}
BATCH = {"demo": 50, "cifar": 100, "mnist": 100}


def chi_square(counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """``[...]``: the chi-square statistic of class counts ``counts [..., K]`` (rows summing to
    ``n``) against class shares ``shares [K]`` (positive, summing to 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum(axis=-1, keepdims=True) * shares
    return ((counts - expected) ** 2 / expected).sum(axis=-1)


def random_draws(pool_counts: np.ndarray, n: int, draws: int, seed: int = 0) -> dict:
    """Chi-square and classes covered of ``draws`` seeded draws of ``n`` of a pool with class
    counts ``pool_counts [K]``, without replacement: ``{"chi2": [draws], "covered": [draws]}``."""
    rng = np.random.default_rng(seed)
    counts = rng.multivariate_hypergeometric(pool_counts, n, size=draws)  # [draws, K]
    shares = pool_counts / pool_counts.sum()
    return {"chi2": chi_square(counts, shares), "covered": (counts > 0).sum(axis=1)}


def batch_stats(batch_counts: np.ndarray, pool_counts: np.ndarray, draws: dict) -> dict:
    """The batch's classes covered, chi-square, and percentile and p-value among ``draws``
    (:func:`random_draws`)."""
    stat = float(chi_square(batch_counts, pool_counts / pool_counts.sum()))
    ref = draws["chi2"]
    return {
        "covered": int((np.asarray(batch_counts) > 0).sum()),
        "chi2": stat,
        "percentile": float(100 * (ref <= stat + 1e-9).mean()),
        "p_value": float((ref >= stat - 1e-9).mean()),
    }


def read_answers(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["path"]: row["label"] for row in csv.DictReader(fh)}


def pool_files(name: str, tmp: Path) -> tuple[Path, Path]:
    """``(manifest, answers)`` of pool ``name``, written under ``tmp``."""
    if name == "demo":
        from pal.labeling.demo import write_demo

        demo = write_demo(tmp / "demo-files")
        return demo.manifest, demo.answers
    root = tmp / f"{name}-files"
    rows, answers = _cifar_rows(root) if name == "cifar" else _mnist_rows(root)
    manifest, answers_csv = root / "manifest.csv", root / "answers.csv"
    _write_csv(manifest, ["path", "label", "split"], rows)
    _write_csv(answers_csv, ["path", "label"], answers)
    return manifest, answers_csv


def _cifar_rows(root: Path, per_class: int = 300, val: int = 10, test: int = 50):
    import tarfile

    with tarfile.open(POOLS["cifar"]) as tar:
        tar.extractall(root, filter="data")
    rng = np.random.default_rng(0)
    rows, answers = [], []
    for folder in sorted((root / "train").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        files = [files[i] for i in rng.permutation(len(files))[: per_class + val]]
        for k, f in enumerate(files):
            path = f.relative_to(root).as_posix()
            if k < per_class:
                rows.append([path, "", "pool"])
                answers.append([path, folder.name])
            else:
                rows.append([path, folder.name, "val"])
        for f in sorted((root / "test" / folder.name).glob("*.jpg"))[:test]:
            rows.append([f.relative_to(root).as_posix(), folder.name, "test"])
    return rows, answers


def _mnist_rows(root: Path, pool: int = 3000, val: int = 100, test: int = 500):
    from PIL import Image

    data = np.load(POOLS["mnist"])
    names = [str(c) for c in data["classes"]]
    chosen = np.random.default_rng(0).permutation(len(data["y_train"]))[: pool + val]
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, answers = [], []
    for k, i in enumerate(chosen):
        path = f"images/train_{i:05d}.png"
        Image.fromarray(data["x_train"][i]).save(root / path)
        label = names[int(data["y_train"][i])]
        if k < pool:
            rows.append([path, "", "pool"])
            answers.append([path, label])
        else:
            rows.append([path, label, "val"])
    for i in range(test):
        path = f"images/test_{i:05d}.png"
        Image.fromarray(data["x_test"][i]).save(root / path)
        rows.append([path, names[int(data["y_test"][i])], "test"])
    return rows, answers


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def first_batch(manifest: Path, folder: Path, data_dir: Path, n: int, strategy: str, seed: int):
    """A fresh project of ``manifest`` in ``folder`` and its label-free first batch of ``n`` by
    ``strategy`` under ``seed``: ``(round record, batch paths, wall seconds of next)``."""
    from pal.labeling.rounds import next_batch
    from pal.labeling.setup import init_project

    project = init_project(folder, manifest, overrides={"data_dir": str(data_dir), "seed": seed})
    start = time.perf_counter()
    with project.lock():
        record = next_batch(project, n, strategy=strategy)
    wall = time.perf_counter() - start
    return record, [row["path"] for row in project.batch(record.round)], wall


def bench_pool(name: str, strategies: dict[str, int], draws: int, tmp: Path) -> dict:
    manifest, answers_csv = pool_files(name, tmp)
    answers = read_answers(answers_csv)
    classes = sorted(set(answers.values()))
    index = {c: k for k, c in enumerate(classes)}
    pool_counts = np.bincount([index[c] for c in answers.values()], minlength=len(classes))
    n = BATCH[name]
    ref = random_draws(pool_counts, n, draws)
    out = {
        "manifest": str(manifest),
        "n": n,
        "pool_size": int(pool_counts.sum()),
        "pool_counts": dict(zip(classes, pool_counts.tolist(), strict=True)),
        "random_draws": {
            "draws": draws,
            "chi2_median": float(np.median(ref["chi2"])),
            "chi2_p90": float(np.percentile(ref["chi2"], 90)),
            "covered_mean": float(ref["covered"].mean()),
        },
        "runs": [],
    }
    for strategy, seeds in strategies.items():
        for seed in range(seeds):
            folder = tmp / f"{name}-{strategy}-{seed}"
            load_before = os.getloadavg()[0]
            record, paths, wall = first_batch(manifest, folder, tmp / "data", n, strategy, seed)
            counts = np.bincount([index[answers[p]] for p in paths], minlength=len(classes))
            run = {
                "strategy": strategy,
                "seed": seed,
                "seconds_total": record.seconds["total"],
                "seconds_query": record.seconds["query"],
                "wall": wall,
                "load_1min_before": load_before,
                "counts": counts.tolist(),
                **batch_stats(counts, pool_counts, ref),
            }
            out["runs"].append(run)
            print(
                f"{name} {strategy} seed {seed}: {run['seconds_total']:.1f} s, "
                f"{run['covered']} classes, chi2 {run['chi2']:.1f} "
                f"(percentile {run['percentile']:.0f})",
                file=sys.stderr,
                flush=True,
            )
    return out


def markdown(results: dict, machine: dict) -> str:
    lines = [
        f"Label-free first batch of `pal label next` on {machine['cpus']} CPU cores "
        f"({machine['cpu']}, torch {machine['torch']}, {machine['threads']} threads), "
        f"{machine['date']}. Chi-square against the pool's class shares; percentile among "
        "random draws of the same size (lower: more balanced).",
        "",
        "| pool (n) | strategy | seed | next s | query s | classes | chi2 | percentile | p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pool, r in results.items():
        rd = r["random_draws"]
        lines.append(
            f"| {pool} ({r['n']}) | *{rd['draws']} random draws* | | | | "
            f"{rd['covered_mean']:.2f} | {rd['chi2_median']:.1f} (median) | 50 | |"
        )
        strategies = list(dict.fromkeys(run["strategy"] for run in r["runs"]))
        for s in strategies:
            runs = [run for run in r["runs"] if run["strategy"] == s]
            for run in runs:
                lines.append(
                    f"| {pool} | {s} | {run['seed']} | {run['seconds_total']:.1f} | "
                    f"{run['seconds_query']:.1f} | {run['covered']} | {run['chi2']:.1f} | "
                    f"{run['percentile']:.0f} | {run['p_value']:.2f} |"
                )
            keys = ("seconds_total", "seconds_query", "covered", "chi2", "percentile", "p_value")
            mean = {k: float(np.mean([run[k] for run in runs])) for k in keys}
            if len(runs) > 1:
                lines.append(
                    f"| {pool} | **{s} mean** | {len(runs)} seeds | {mean['seconds_total']:.1f} "
                    f"| {mean['seconds_query']:.1f} | {mean['covered']:.2f} | "
                    f"{mean['chi2']:.1f} | {mean['percentile']:.0f} | {mean['p_value']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def machine_info() -> dict:
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = ""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "uptime": uptime,
    }


def parse_strategies(items: list[str], default_seeds: int) -> dict[str, int]:
    """``NAME`` or ``NAME:SEEDS`` items -> ``{name: seeds}``."""
    out: dict[str, int] = {}
    for item in items:
        for part in item.split(","):
            name, _, seeds = part.partition(":")
            out[name] = int(seeds) if seeds else default_seeds
    return out


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_batch", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--pool", action="append", choices=sorted(POOLS), help="a pool (repeatable; default all)"
    )
    parser.add_argument(
        "--strategy",
        action="append",
        metavar="NAME[:SEEDS]",
        help="label-free strategies, comma-separated or repeated, each with its number of seeds "
        "(default random:20,typiclust:10,pal:1,coreset:1; pal and coreset train a rotation "
        "network for minutes)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds where NAME has none")
    parser.add_argument("--draws", type=int, default=1000, help="random draws of the reference")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    strategies = parse_strategies(
        args.strategy or ["random:20,typiclust:10,pal:1,coreset:1"], args.seeds
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="pal-bench-first-") as tmp:
        for name in args.pool or list(POOLS):
            if POOLS[name] is not None and not POOLS[name].is_file():
                print(f"skipped {name}: {POOLS[name]} is absent", file=sys.stderr)
                continue
            results[name] = bench_pool(name, strategies, args.draws, Path(tmp))
    info = machine_info()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(markdown(results, info))
    print(f"uptime: {info['uptime']}")
    return results


if __name__ == "__main__":
    run()
