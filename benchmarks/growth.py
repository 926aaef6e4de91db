"""How the cost of a pool grows with its size: memory and scoring throughput, resident vs
streamed, one Ray Data actor vs two; and a whole PAL round on the largest pool.

    python -m benchmarks --growth                  # the table below, on this machine
    python -m benchmarks.growth case --n 10000 --size 32 --mode streamed   # one measurement

Every measurement runs in a fresh process, so its peak memory is its own. Pools are synthetic:
``uint8 [N, 3, S, S]`` images and 10 labels drawn from a fixed seed (the cost of scoring does
not depend on what the images show). Scoring is PAL's pass over the pool, the default config's
``cnn`` scoring network with four rotations per image and the body's features kept for the
head fine-tune (:func:`pal.pretext.rotation.score_pool`), the faster of :data:`REPEATS` passes
(Ray's include starting their actors each time):

- ``resident``: the pool as one tensor on the device (:func:`pal.placement.place` under the
  budget);
- ``streamed``: the pool on the host (:class:`pal.placement.HostImages`), chunks gathered and
  copied as the pass goes;
- ``mapped``: the pool written to a decode cache (:mod:`pal.data.cache`) beforehand and read
  back as its memory map, streamed: chunks are paged in from the file as the pass goes;
- ``ray-1``, ``ray-2``: the streamed pool scored by one or two Ray Data actors of one CPU each
  on a local Ray (:mod:`pal.distributed`), actor start-up included.

Memory: the process's peak resident set (``ru_maxrss``), its peak of anonymous memory (``RssAnon``,
sampled every 20 ms: the resident set less the file pages the kernel may drop again, which is
what a memory-mapped pool saves) and, above its baseline before the pool was made, what the pass
itself added; on a GPU the peak of ``torch.cuda.max_memory_allocated``.
Ray's actors and object store live in other processes: their memory is not in the figure.

``round`` cases run ``rounds=1`` of a real :class:`pal.loop.Experiment` with PAL (round 0: task
training, evaluation and the PAL query) with ``device_budget_gb`` below the pool's bytes (once
with the pool in memory, once as a decode cache's memory map), and on a pool small enough for
both placements compare the query with the resident path's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODES = ["resident", "streamed", "mapped", "ray-1", "ray-2"]
REPEATS = 2
"""Scoring passes per case below :data:`ONE_PASS_FROM` images; the table gives the faster (this
VM's timings vary by up to 30%, and the first pass pays the warm-up)."""
ONE_PASS_FROM = 50_000
ONE_PASS_PIXELS = 64 * 64
"""Images of this many pixels or more are scored once too (a 64x64 pass costs 4x a 32x32 one)."""
CASES = [  # (pool, image side, placements): Ray Data up to 50k (a 200k pass is ~10 min a mode)
    (10_000, 32, ["resident", "streamed", "ray-1", "ray-2"]),
    (50_000, 32, MODES),
    (200_000, 32, ["resident", "streamed", "mapped"]),
    (10_000, 64, ["resident", "streamed"]),
]
ROUND = {  # the PAL round on a synthetic pool: the default config with fewer epochs
    "strategy": "pal",
    "rounds": 1,
    "epochs_task": 2,
    "epochs_scoring": 2,
    "finetune_epochs": 5,
    "device": "cpu",
}


def _noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill ``x`` (``uint8 [n, 3, S, S]``, in memory or a memory map) with seeded noise, in
    blocks: no int64 temporary of the whole pool."""
    for start in range(0, len(x), 10_000):
        stop = min(len(x), start + 10_000)
        x[start:stop] = rng.integers(0, 256, (stop - start, *x.shape[1:]), dtype=np.uint8)
    return x


def synthetic(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [n, 3, size, size], int64 [n])``: seeded noise images and labels."""
    rng = np.random.default_rng(seed)
    x = _noise(np.empty((n, 3, size, size), dtype=np.uint8), rng)
    return torch.from_numpy(x), torch.from_numpy(rng.integers(0, 10, n))


def synthetic_cache(n: int, size: int, folder: Path, seed: int = 0) -> None:
    """:func:`synthetic`'s pool (the same pixels and labels) written as a decode cache in
    ``folder`` (:mod:`pal.data.cache`'s layout, images channels-first), never whole in memory."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(folder / "x_train.npy", "w+", np.uint8, (n, 3, size, size))
    _noise(x, rng).flush()
    del x
    np.save(folder / "y_train.npy", rng.integers(0, 10, n))


def _mapped_pool(n: int, size: int) -> Path:
    """A fresh temporary folder holding :func:`synthetic_cache`'s pool under ``pool/``."""
    folder = Path(tempfile.mkdtemp(prefix="pal-growth-"))
    synthetic_cache(n, size, folder / "pool")
    return folder


def _read_mapped(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_mapped_pool`'s images (``uint8 [n, 3, S, S]``, the memory map itself) and labels,
    read as the decode cache reads them."""
    from pal.data.cache import read_cache

    arrays = read_cache(folder / "pool")
    return torch.from_numpy(arrays["x_train"].transpose(0, 3, 1, 2)), torch.from_numpy(
        arrays["y_train"]
    )


class AnonPeak:
    """The peak of this process's anonymous resident memory (``RssAnon``), sampled by a thread."""

    def __init__(self, every: float = 0.02):
        import threading

        self.peak, self._stop = current_anon_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, current_anon_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, current_anon_mib())


def current_anon_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def device_peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def score_case(n: int, size: int, mode: str, device: str) -> dict:
    """One scoring pass over a pool of ``n`` images of ``size`` px placed by ``mode``."""
    from pal.config import Config
    from pal.models import ScoringNet, build_backbone
    from pal.placement import Distributed, HostImages, place
    from pal.pretext.rotation import score_pool
    from pal.rng import seeded_init
    from pal.training import Normalizer, resolve_device

    dev = resolve_device(device)
    # the cache is written before the baseline: the file is not this pass's memory
    cache = _mapped_pool(n, size) if mode == "mapped" else None
    baseline = current_rss_mib()
    anon = AnonPeak()
    x, _ = synthetic(n, size) if cache is None else _read_mapped(cache)
    with seeded_init(0, "scoring-init"):
        net = ScoringNet(build_backbone("cnn", 3, (size, size)), 10)
    net.to(dev)
    normalize = Normalizer(x[:10_000]).to(dev)
    cfg = Config(device=device, device_budget_gb=None if mode == "resident" else 0.0)
    if mode.startswith("ray"):
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        workers = int(mode.split("-")[1])
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        pool = HostImages(x, dev, distributed=Distributed(min_pool=0, workers=workers))
        placement = "streamed"
    else:
        placement_info, (pool,) = place(cfg, dev, x)
        placement = placement_info.mode
    before = current_rss_mib()
    times = []
    once = n >= ONE_PASS_FROM or size * size >= ONE_PASS_PIXELS
    for _ in range(1 if once else REPEATS):
        start = time.perf_counter()
        scores = score_pool(net, pool, normalize, cfg.eval_batch_size, keep_features=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    assert scores.s_s.shape == (n,) and scores.features.shape[:2] == (n, 4)
    if mode.startswith("ray"):
        from pal.distributed import last_ray_run

        run = last_ray_run()
        assert run is not None and run.images == n, "the pool was not scored by Ray Data"
    peak_anon = anon.stop()
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "kind": "score",
        "n": n,
        "size": size,
        "mode": mode,
        "placement": placement,
        "pool_mib": x.numel() / 2**20,
        "features_mib": scores.features.numel() * 4 / 2**20,
        "seconds": seconds,
        "all_seconds": times,
        "images_per_s": n / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "peak_anon_mib": peak_anon,
        "baseline_rss_mib": baseline,
        "pass_added_mib": current_rss_mib() - before,
        "device_peak_mib": device_peak_mib(dev),
        "threads": torch.get_num_threads(),
    }


def round_case(
    n: int, size: int, budget_gb: float | None, device: str, mapped: bool = False
) -> dict:
    """A PAL round (``rounds=1``: round 0 and its query) on a synthetic pool of ``n`` images;
    ``mapped``: the pool read as the memory map of a decode cache written beforehand."""
    from pal.config import Config
    from pal.data import ImageData
    from pal.loop import Experiment

    cache = _mapped_pool(n, size) if mapped else None
    baseline = current_rss_mib()
    anon = AnonPeak()
    x, y = synthetic(n, size) if cache is None else _read_mapped(cache)
    x_test, y_test = synthetic(2000, size, seed=1)
    data = ImageData(
        f"synthetic-{n}x{size}", x, y, x_test, y_test, [str(i) for i in range(10)], "crop_flip"
    )
    sizes = {"val_size": min(500, n // 10), "initial_size": min(1000, n // 10)}
    sizes["query_size"] = sizes["initial_size"]
    cfg = Config(**{**ROUND, **sizes, "device": device, "device_budget_gb": budget_gb})
    experiment = Experiment(cfg, data)
    start = time.perf_counter()
    record = experiment.run_round()
    seconds = time.perf_counter() - start
    pending = experiment.pool.pending
    peak_anon = anon.stop()
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "kind": "round",
        "n": n,
        "size": size,
        "mapped": mapped,
        "placement": experiment.placement.mode,
        "budget_gb": budget_gb,
        "pool_mib": (x.numel() + x_test.numel()) / 2**20,
        "seconds": seconds,
        "train_seconds": record.train_seconds,
        "query_seconds": pending.seconds,
        "query": list(pending.indices),
        "peak_rss_mib": peak_rss_mib(),
        "peak_anon_mib": peak_anon,
        "baseline_rss_mib": baseline,
        "device_peak_mib": device_peak_mib(experiment.device),
    }


def _child(argv: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.growth", *argv]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_growth(
    out: Path,
    device: str = "cpu",
    cases: list[tuple[int, int, list[str]]] = CASES,
    round_sizes: tuple[int, int] = (10_000, 200_000),
    round_side: int = 32,
    timeout: float = 3600.0,
    resume: bool = False,
) -> dict:
    """Every scoring case and the PAL rounds, each in its own process; writes
    ``growth-<device>.json``, ``.md`` and ``.png`` to ``out``.

    Each finished measurement is appended to ``growth-<device>-cases.jsonl`` as it ends; with
    ``resume`` the measurements already there are kept and not run again (an interrupted run
    goes on where it stopped), else the file starts afresh."""
    from benchmarks.__main__ import machine

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"growth-{device}"
    log = stem.with_name(stem.name + "-cases.jsonl")
    done = {}
    if resume and log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[tuple(row["argv"])] = row
    else:
        log.write_text("")

    def measure(argv: list[str]) -> dict:
        if tuple(argv) not in done:
            row = {**_child(argv, timeout), "argv": argv}
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[tuple(argv)] = row
        return done[tuple(argv)]

    scoring = []
    for n, size, modes in cases:
        for mode in modes:
            argv = ["case", "--n", str(n), "--size", str(size), "--mode", mode, "--device", device]
            scoring.append(measure(argv))
            print(_score_row(scoring[-1]), flush=True)
    small, large = round_sizes
    rounds = []
    below = _below(large, round_side)
    for n, budget, mapped in (
        (small, None, False), (small, 0.0, False), (large, below, False), (large, below, True)
    ):  # fmt: skip
        argv = ["round", "--n", str(n), "--size", str(round_side), "--device", device]
        argv += ["--budget-gb", str(budget)] if budget is not None else []
        argv += ["--mapped"] if mapped else []
        rounds.append(measure(argv))
        print(_round_row(rounds[-1]), flush=True)
    same = rounds[0]["query"] == rounds[1]["query"]
    same_mapped = rounds[2]["query"] == rounds[3]["query"]
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": device,
        "scoring": [{k: v for k, v in r.items() if k != "argv"} for r in scoring],
        "rounds": [{k: v for k, v in r.items() if k not in ("query", "argv")} for r in rounds],
        "same_query_resident_vs_streamed": same,
        "same_query_memory_vs_mapped": same_mapped,
    }
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    plot(result, stem.with_suffix(".png"))
    return result


def _below(n: int, side: int = 32) -> float:
    """A device budget of half the bytes of a pool of ``n`` images of ``side`` px, in GiB."""
    return n * 3 * side * side / 2 / 2**30


def _mib(value: float | None) -> str:
    """A MiB figure for the tables; ``-`` where none was measured (no GPU, or a row measured
    before peak anon memory was)."""
    return "-" if value is None else f"{value:,.0f}"


def _score_row(r: dict) -> str:
    device, anon = _mib(r.get("device_peak_mib")), _mib(r.get("peak_anon_mib"))
    return (
        f"| {r['n']:,} | {r['size']}x{r['size']} | {r['pool_mib']:,.0f} | {r['mode']} | "
        f"{r['seconds']:.1f} | {r['images_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} | {anon} | "
        f"{r['pass_added_mib']:,.0f} | {device} |"
    )


def _round_row(r: dict) -> str:
    budget = "default" if r["budget_gb"] is None else f"{r['budget_gb'] * 1024:,.0f} MiB"
    device, anon = _mib(r.get("device_peak_mib")), _mib(r.get("peak_anon_mib"))
    placement = r["placement"] + (", memory-mapped" if r.get("mapped") else "")
    return (
        f"| {r['n']:,} | {r['pool_mib']:,.0f} | {budget} | {placement} | "
        f"{r['seconds']:.1f} | {r['train_seconds']:.1f} | {r['query_seconds']:.1f} | "
        f"{r['peak_rss_mib']:,.0f} | {anon} | {device} |"
    )


def markdown(result: dict) -> str:
    lines = [
        f"Pool growth on {result['device']} ({result['machine']['cpu']}, "
        f"{result['machine']['cpus']} CPUs), {result['date']}",
        "",
        "| pool | image | pool MiB | placement | scoring s | images/s | peak RSS MiB | "
        "peak anon MiB | pass added MiB | device peak MiB |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_score_row(r) for r in result["scoring"]),
        "",
        "| PAL round, pool | images MiB | device budget | placement | round s | task training s "
        "| query s | peak RSS MiB | peak anon MiB | device peak MiB |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_round_row(r) for r in result["rounds"]),
        "",
        "Same query resident and streamed: "
        + ("yes" if result["same_query_resident_vs_streamed"] else "NO")
        + "; the largest pool in memory and memory-mapped: "
        + ("yes" if result.get("same_query_memory_vs_mapped") else "NO"),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Scoring seconds and peak RSS against pool size (32x32), one line per placement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    rows = [r for r in result["scoring"] if r["size"] == 32]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        ax_t.plot(ns, [r["seconds"] for r in mine], marker="o", label=mode)
        ax_m.plot(ns, [r["peak_rss_mib"] for r in mine], marker="o", label=mode)
    for ax, label in ((ax_t, "scoring pass, s"), (ax_m, "peak RSS of the process, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pool size (32x32 images)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:  # no 32x32 case, no line
            ax.legend()
    fig.suptitle(f"PAL scoring cost against pool size ({result['machine']['cpu']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.growth")
    sub = parser.add_subparsers(dest="cmd", required=True)
    case = sub.add_parser("case", help="one scoring pass, printed as JSON")
    case.add_argument("--n", type=int, required=True)
    case.add_argument("--size", type=int, default=32)
    case.add_argument("--mode", choices=MODES, required=True)
    case.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    rnd = sub.add_parser("round", help="one PAL round, printed as JSON")
    rnd.add_argument("--n", type=int, required=True)
    rnd.add_argument("--size", type=int, default=32)
    rnd.add_argument("--budget-gb", type=float)
    rnd.add_argument("--mapped", action="store_true", help="the pool as a decode cache's map")
    rnd.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.cmd == "case":
        result = score_case(args.n, args.size, args.mode, args.device)
    else:
        result = round_case(args.n, args.size, args.budget_gb, args.device, args.mapped)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
