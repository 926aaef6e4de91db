"""The verdicts' error rates and the seeds a study grown until decided uses (Monte Carlo).

    python -m benchmarks.sequential                  # 20000 studies per row
    python -m benchmarks.sequential --studies 4000   # quicker, noisier

A simulated study is a family of ``m = 5`` comparisons (five variants against one reference,
as in ``ablations/mnist_strategies.py``); comparison ``j``'s per-seed AUC difference is its
true effect plus normal noise of standard deviation ``sd = 1``, half of its variance shared
by the family (the reference's runs are in every comparison). No network is trained: the rows
run :func:`pal.stats.simulate_until_decided`, the rule ``pal ablate --until-decided`` follows
(Holm's correction over the repeated p-values of a :class:`pal.stats.SequentialDesign`), and
the same function with one look for fixed designs.

Printed per design and scenario: the family-wise error rate (the share of studies with any
false ``better``/``worse``) under the null, with and without Holm's correction; under an
effect, the power per comparison and the mean seeds a comparison used; and for the sequential
design, the seeds a fixed design needs for the same power (the smallest ``n`` whose simulated
power reaches it), so the saving is ``fixed n - mean seeds``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pal.stats import SequentialDesign, simulate_until_decided

FAMILY = 5
LOOKS = (3, 5, 7, 10)  # the job's 3 seeds, batches of 2, at most 10
EFFECTS = (0.0, 1.0, 1.5, 2.0)  # true AUC difference, in standard deviations of the differences


def fixed(n: int) -> SequentialDesign:
    """One look at ``n`` seeds: the fixed-sample paired t test."""
    return SequentialDesign((n,), "pocock")


def rates(design, effect, correction, studies, seed) -> dict[str, float]:
    """FWER (effect 0) or power and mean seeds per comparison for ``FAMILY`` comparisons."""
    out = simulate_until_decided(
        [effect] * FAMILY, design, correction=correction, studies=studies, seed=seed
    )
    reject = out["reject"]
    return {
        "fwer": float(reject.any(axis=1).mean()) if effect == 0 else None,
        "power": float(reject.mean()) if effect else None,
        "wrong_sign": float((out["direction"] * np.sign(effect) < 0).mean()) if effect else None,
        "mean_seeds": float(out["seeds"].mean()),
    }


def table(studies: int = 20_000, seed: int = 0) -> list[dict]:
    """Every row: design, effect, correction, and :func:`rates`; the sequential rows under an
    effect also ``fixed_n_same_power``."""
    rows = []
    designs = {
        **{f"fixed {n}": fixed(n) for n in (3, 5, 10)},
        "O'Brien-Fleming 3-5-7-10": SequentialDesign(LOOKS, "obrien_fleming"),
        "Pocock 3-5-7-10": SequentialDesign(LOOKS, "pocock"),
    }
    for name, design in designs.items():
        for effect in EFFECTS:
            corrections = ("holm", "none") if effect == 0 else ("holm",)
            for correction in corrections:
                row = {"design": name, "effect_sd": effect, "correction": correction}
                row.update(rates(design, effect, correction, studies, seed))
                if effect and len(design.looks) > 1:
                    row["fixed_n_same_power"] = _fixed_n(row["power"], effect, studies, seed)
                rows.append(row)
    return rows


def _fixed_n(target: float, effect: float, studies: int, seed: int) -> int | None:
    """The fewest seeds whose fixed design (Holm over the family) reaches ``target`` power."""
    for n in range(3, 41):
        if rates(fixed(n), effect, "holm", studies, seed)["power"] >= target:
            return n
    return None


def render(rows: list[dict]) -> str:
    lines = [
        "| design | true effect (sd) | correction | FWER | power per comparison | "
        "mean seeds per comparison | fixed seeds for that power |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['design']} | {r['effect_sd']:g} | {r['correction']} | "
            f"{_pct(r['fwer'])} | {_pct(r['power'])} | {r['mean_seeds']:.2f} | "
            f"{r.get('fixed_n_same_power') or '-'} |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20_000, help="simulated studies per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for sequential.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = table(args.studies, args.seed)
    print(render(rows))
    print(f"\n{args.studies} studies per row, {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "sequential.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
