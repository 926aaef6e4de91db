"""Seeded runs recorded to compare two versions of ``pal`` query by query and metric by metric.

    python -m benchmarks.recorded_runs record OUT     # run them all, write OUT/
    python -m benchmarks.recorded_runs compare A B    # exit 1 where A and B differ

What is recorded, on the CPU, each on a small pool in seconds:

- every classification strategy on digits (2 rounds, PAL with 3 sub-queries and its fine-tune),
  PAL with two classes missing and with label noise, and PAL with ``candidate_pool``;
- every segmentation strategy on ``digit_scenes`` (PAL with its SimCLR score and sub-queries);
- ``pal label`` on the demo: a label-free first batch (coreset), then two labeled rounds (PAL,
  then entropy), the demo's annotator answering each batch; a second project whose label-free
  batch is PAL's.

Per experiment: every round's query (dataset indices in the order chosen) and its metrics
(:meth:`pal.results.RoundRecord.metrics`). Per labeling round: ``batch.csv`` as written and
``round.json``. ``compare`` requires identical bytes for ``batch.csv`` and identical values
elsewhere, leaving out what measures time (keys naming ``seconds``) and the files' paths.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CLASSIFICATION = dict(
    dataset="digits",
    pool_size=500,
    val_size=60,
    initial_size=40,
    query_size=20,
    rounds=2,
    epochs_task=3,
    epochs_scoring=3,
    finetune_epochs=2,
    subqueries=3,
    vaal_epochs=2,
    mc_samples=4,
    batch_size=32,
    device="cpu",
    seed=3,
)
SEGMENTATION = dict(
    dataset="digit_scenes",
    task_backbone="segcnn",
    scoring_backbone="segcnn",
    pool_size=200,
    val_size=20,
    initial_size=30,
    query_size=12,
    rounds=1,
    epochs_task=2,
    epochs_scoring=2,
    finetune_epochs=1,
    subqueries=2,
    batch_size=16,
    eval_batch_size=64,
    device="cpu",
    seed=3,
)


def experiments() -> dict[str, dict[str, Any]]:
    """name -> config overrides of every recorded experiment."""
    import pal
    from pal.strategies import STRATEGIES

    runs = {f"cls-{n}": dict(CLASSIFICATION, strategy=n) for n in pal.list_strategies()}
    runs["cls-dbal"]["dropout"] = 0.3  # MC dropout samples it
    runs["cls-pal-missing"] = dict(CLASSIFICATION, strategy="pal", missing_classes=("3", "8"))
    runs["cls-pal-noise"] = dict(CLASSIFICATION, strategy="pal", label_noise=0.2)
    runs["cls-pal-candidates"] = dict(CLASSIFICATION, strategy="pal", candidate_pool=200)
    for n in pal.list_strategies():
        if "segmentation" in STRATEGIES.get(n).tasks:
            runs[f"seg-{n}"] = dict(SEGMENTATION, strategy=n)
    return runs


def record(out: Path) -> None:
    """Run every recorded experiment and labeling round; write them under ``out``."""
    import torch

    import pal
    from pal.loop import Experiment

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in experiments().items():
        exp = Experiment(pal.make_config(**overrides))
        rounds = [{"selected": rec.selected, "metrics": rec.metrics()} for rec in exp.rounds()]
        _write_json(out / f"{name}.json", {"config": overrides, "rounds": rounds})
        print(name, "recorded", flush=True)
    record_labeling(out / "label")


def record_labeling(out: Path) -> None:
    """``pal label`` on the demo, run as a user runs it (the CLI, ``--no-tracking``)."""
    from pal.cli import main as pal_cli

    def run(*args: str) -> None:
        code = pal_cli(list(args))
        if code:
            raise SystemExit(f"pal {' '.join(args)} exited {code}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run("label", "demo", str(tmp / "demo"))
        manifest, answers = str(tmp / "demo" / "manifest.csv"), str(tmp / "demo" / "answers.csv")
        settings = ["--set", "epochs_task=3", "--set", "epochs_scoring=3"]
        settings += ["--set", "finetune_epochs=2", "--set", "subqueries=3", "--set", "seed=3"]
        plans = {
            "coreset": [("coreset", 30), ("pal", 20), ("entropy", 20)],
            "pal": [("pal", 30)],
        }
        for project_name, plan in plans.items():
            project = str(tmp / project_name)
            run("label", "init", project, "--pool", manifest, *settings)
            for r, (strategy, n) in enumerate(plan, start=1):
                run(
                    "label",
                    "next",
                    project,
                    "--n",
                    str(n),
                    "--strategy",
                    strategy,
                    "--quiet",
                    "--no-tracking",
                )
                export = str(tmp / f"{project_name}-{r}.json")
                run("label", "answer", project, answers, export)
                run("label", "import", project, export)
                src = Path(project) / "rounds" / f"{r:03d}"
                dst = out / project_name / f"{r:03d}"
                dst.mkdir(parents=True, exist_ok=True)
                (dst / "batch.csv").write_bytes((src / "batch.csv").read_bytes())
                (dst / "round.json").write_bytes((src / "round.json").read_bytes())
                print(f"label {project_name} round {r} recorded", flush=True)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_plain(value), indent=1, sort_keys=True) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _timeless(value: Any) -> Any:
    """``value`` without what measures time or names a temporary path."""
    if isinstance(value, dict):
        return {
            k: _timeless(v)
            for k, v in value.items()
            if "seconds" not in k and k not in {"dataset", "placement", "data_dir"}
        }
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def compare(a: Path, b: Path) -> list[str]:
    """What differs between the recordings ``a`` and ``b`` (empty: the same)."""
    diffs = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    for rel in sorted(files_a ^ files_b):
        diffs.append(f"{rel}: only in {'A' if rel in files_a else 'B'}")
    for rel in sorted(files_a & files_b):
        if rel.name == "batch.csv":
            if (a / rel).read_bytes() != (b / rel).read_bytes():
                diffs.append(f"{rel}: bytes differ")
            continue
        va = _timeless(json.loads((a / rel).read_text()))
        vb = _timeless(json.loads((b / rel).read_text()))
        diffs += [f"{rel}: {d}" for d in _diff(va, vb, "")]
    return diffs


def _diff(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in {'A' if k in a else 'B'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        os.environ.setdefault("PAL_NO_PROGRESS", "1")
        record(args.out)
        return 0
    diffs = compare(args.a, args.b)
    for line in diffs:
        print(line)
    print(f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
