"""Time ``pal label next`` as a user runs it: the digits demo and 10,000 CIFAR-10 JPEGs.

    python -m benchmarks.labeling                  # both pools
    python -m benchmarks.labeling --pool demo      # the digits demo only (no files needed)

``demo``: ``pal label demo``'s pool (1,200 unlabeled 8x8 PNGs, 100 labeled for validation), a
label-free first batch of 50, the answers imported, and a second batch of 50 trained on them.
``cifar10``: 10,000 training images of ``../shared/data/cifar10-jpeg.tar.gz`` as a manifest of
JPEG files, 500 of them labeled (a seeded draw) and 500 more as the validation split, the rest
unlabeled; one batch of 200 chosen by PAL with the default config (``cnn`` networks).

``init`` is timed on its own: it decodes the pool's files into the cache, which every ``next``
reads. Phases come from the round's ``round.json``. Writes ``labeling-<device>.json`` and
``.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pal.cli import main as pal

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR = SHARED / "cifar10-jpeg.tar.gz"


def timed_next(project: Path, n: int, *extra: str) -> dict:
    """Run ``pal label next`` and return its wall seconds with the round's phases."""
    start = time.perf_counter()
    code = pal(["label", "next", str(project), "--n", str(n), "--quiet", "--no-tracking", *extra])
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"pal label next failed ({code})")
    r = max(int(p.name) for p in (project / "rounds").iterdir() if p.name.isdigit())
    info = json.loads((project / "rounds" / f"{r:03d}" / "round.json").read_text())
    return {"wall": wall, "phases": info["seconds"], "n_labeled": info["n_labeled"]}


def timed_init(project: Path, manifest: Path, data_dir: Path) -> dict:
    """Run ``pal label init`` (the pool's first decode) and return its wall seconds."""
    start = time.perf_counter()
    code = pal(["label", "init", str(project), "--pool", str(manifest),
                "--set", f"data_dir={data_dir}"])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"pal label init failed ({code})")
    return {"wall": time.perf_counter() - start, "phases": {}, "n_labeled": "-"}


def bench_demo(tmp: Path) -> dict:
    pal(["label", "demo", str(tmp / "demo")])
    project = tmp / "demo-project"
    out = {"init": timed_init(project, tmp / "demo" / "manifest.csv", tmp / "data")}
    out["next, no label"] = timed_next(project, 50)
    pal(["label", "answer", str(project), str(tmp / "demo" / "answers.csv"), str(tmp / "a.json")])
    pal(["label", "import", str(project), str(tmp / "a.json")])
    out["next, 50 labels"] = timed_next(project, 50)
    return out


def cifar_manifest(tmp: Path, size: int = 10000, labeled: int = 500, val: int = 500) -> Path:
    """Extract the CIFAR-10 tree and write a manifest of ``size`` training JPEGs: ``labeled``
    labeled pool rows, ``val`` validation rows, the rest unlabeled (seeded draws)."""
    root = tmp / "cifar10"
    with tarfile.open(CIFAR) as tar:
        tar.extractall(root, filter="data")
    files = sorted(root.rglob("train/*/*.jpg"))
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(files), size + val, replace=False)
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for k, i in enumerate(chosen):
            path = files[i].relative_to(root).as_posix()
            label = files[i].parent.name
            if k < val:
                w.writerow([path, label, "val"])
            else:
                w.writerow([path, label if k < val + labeled else "", "pool"])
    return manifest


def bench_cifar(tmp: Path) -> dict:
    manifest = cifar_manifest(tmp)
    project = tmp / "cifar-project"
    out = {"init": timed_init(project, manifest, tmp / "data")}
    out["next, 500 labels"] = timed_next(project, 200)
    return out


def markdown(results: dict, machine: dict) -> str:
    lines = [
        f"`pal label next` on {machine['cpu']} ({machine['threads']} threads, "
        f"{machine['device']}), default config (`cnn`, 30 + 30 epochs).",
        "",
        "| pool | run | labeled | wall s | load | train | evaluate | query | predict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pool, runs in results.items():
        for name, r in runs.items():
            p = r["phases"]
            cells = [f"{p[k]:.1f}" if k in p else "-" for k in
                     ("load", "train", "evaluate", "query", "predict")]  # fmt: skip
            lines.append(
                f"| {pool} | {name} | {r['n_labeled']} | {r['wall']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labeling")
    parser.add_argument("--pool", choices=("demo", "cifar10", "all"), default="all")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="pal-bench-label-") as tmp:
        if args.pool in ("demo", "all"):
            results["demo"] = bench_demo(Path(tmp))
        if args.pool in ("cifar10", "all"):
            if not CIFAR.is_file():
                print(f"skipped cifar10: {CIFAR} is absent")
            else:
                results["cifar10"] = bench_cifar(Path(tmp))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"labeling-{device}.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    text = markdown(results, machine)
    (out / f"labeling-{device}.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    run()
