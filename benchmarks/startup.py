"""How long the ``pal`` command takes to answer before any work: ``--help`` of each command.

    python -m benchmarks.startup            # 5 runs each, the median and the slowest
    python -m benchmarks.startup --runs 10 --out startup.json

Each run is a fresh process of the installed ``pal`` command (``python -m pal`` where it is not
on ``PATH``), as a user starts it. ``import pal`` loads no torch (its names load on first use),
so help, argument errors and ``pal label status`` answer without the deep-learning stack.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (
    ["--help"],
    ["label", "--help"],
    ["label", "next", "--help"],
    ["run", "--help"],
)


def time_command(argv: list[str], runs: int) -> dict:
    """Wall seconds of ``pal ARGV`` over ``runs`` fresh processes."""
    exe = shutil.which("pal")
    base = [exe] if exe else [sys.executable, "-m", "pal"]
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*base, *argv], check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return {
        "command": " ".join(["pal", *argv]),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [time_command(c, args.runs) for c in COMMANDS]
    print("| command | median s | slowest s |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['max_s']:.2f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
