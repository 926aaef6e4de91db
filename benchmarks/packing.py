"""Trials packed to a CPU machine: one trial at a time with every core, or one trial per core.

    python -m benchmarks.packing                              # entropy and PAL, MNIST preset
    python -m benchmarks.packing --strategies pal --set rounds=1

Each trial is ``pal.run_experiment`` on the MNIST preset (``configs/mnist.yaml``, two queries,
tracking off) in its own process, as a Ray Tune trial runs it. ``sequential``: ``cores`` trials
(seeds 0, 1, ...) one after another, each with ``cores`` torch threads; ``packed``: the same
trials side by side, one thread each (what ``ablations/_study.py``'s ``cpu_study`` asks Tune
for: ``cpus_per_trial`` 1, as many at once as there are cores). Prints the wall time of both
and their ratio per strategy; writes ``<out>/packing.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"
TRIAL = """
import sys, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads({threads})
import pal
pal.run_experiment({config!r}, tracking=False, seed={seed}, **{overrides!r})
"""


def trials(strategy: str, threads: int, seeds: list[int], overrides: dict, together: bool):
    """Wall seconds of one trial per seed with ``threads`` threads each, side by side when
    ``together``, else one after another."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    settings = {**overrides, "strategy": strategy}
    scripts = [
        TRIAL.format(threads=threads, config=str(CONFIG), seed=seed, overrides=settings)
        for seed in seeds
    ]
    start = time.perf_counter()
    if together:
        procs = [subprocess.Popen([sys.executable, "-c", s], env=env) for s in scripts]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run([sys.executable, "-c", s], env=env).returncode for s in scripts]
    if any(codes):
        raise SystemExit(f"a {strategy} trial failed (exit codes {codes})")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.packing", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--strategies", nargs="+", default=["entropy", "pal"])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    from pal.config import parse_override

    overrides = {"rounds": 2, **dict(parse_override(kv) for kv in args.set)}
    seeds = list(range(args.cores))
    rows = []
    for strategy in args.strategies:
        sequential = trials(strategy, args.cores, seeds, overrides, together=False)
        packed = trials(strategy, 1, seeds, overrides, together=True)
        rows.append(
            {
                "strategy": strategy,
                "trials": len(seeds),
                "sequential_seconds": sequential,
                "packed_seconds": packed,
                "speedup": sequential / packed,
            }
        )
    lines = [
        f"{len(seeds)} trials on {args.cores} cores ({overrides}):",
        "",
        f"| strategy | one at a time, {args.cores} threads (s) | side by side, 1 thread (s) "
        "| packed speed-up |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['strategy']} | {r['sequential_seconds']:.0f} | {r['packed_seconds']:.0f} | "
        f"{r['speedup']:.2f}x |"
        for r in rows
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "packing.json").write_text(json.dumps(rows, indent=1))
    (out / "packing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
