"""What Ray Tune adds to a trial, and what sharing one GPU between trials gives a sweep.

``tune_overhead``: the same experiment run by ``pal.run_experiment`` (tracked, to a SQLite
store) and as the single trial of a ``pal.sweep`` (tracked the same way); the trial's own time
(Tune's ``time_total_s``) against the plain run, and the sweep's whole wall time with Ray's
start-up beside it. ``gpu_packing``: four trials one at a time (``gpus_per_trial=1``) against
four sharing the GPU (``gpus_per_trial=0.25``), as trials per hour.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pal


def _job_file(folder: Path, name: str, base: dict, **job) -> Path:
    """A job file whose ``get_job()`` returns ``base`` and ``job`` as they are."""
    spec = {"name": name, "base": base, "num_samples": 1, "max_failures": 0, **job}
    path = folder / f"{name}.py"
    path.write_text(
        f"import json\n\n\ndef get_job():\n    return json.loads({json.dumps(spec)!r})\n"
    )
    return path


def tune_overhead(base: dict[str, Any], cpus: int) -> dict[str, Any]:
    """``cpus`` threads for the plain run and ``cpus_per_trial`` for the trial."""
    import torch

    torch.set_num_threads(cpus)
    with tempfile.TemporaryDirectory(prefix="pal-bench-") as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        start = time.perf_counter()
        pal.run_experiment(base, tracking_uri=uri)
        plain = time.perf_counter() - start

        job = _job_file(folder, "overhead", base, cpus_per_trial=cpus, gpus_per_trial=1)
        start = time.perf_counter()
        result = pal.sweep(job, tracking_uri=uri, storage_path=str(folder / "runs"), verbose=0)
        sweep_wall = time.perf_counter() - start
        trial = result.result_grid[0].metrics["time_total_s"]
    return {
        "plain_seconds": plain,
        "trial_seconds": trial,
        "sweep_wall_seconds": sweep_wall,
        "trial_overhead": trial / plain - 1.0,
        "sweep_overhead": sweep_wall / plain - 1.0,
        "cpus": cpus,
    }


def gpu_packing(base: dict[str, Any], trials: int = 4) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    out = {}
    with tempfile.TemporaryDirectory(prefix="pal-bench-") as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        for label, gpus in (("one_at_a_time", 1.0), ("packed", 1.0 / trials)):
            job = _job_file(
                folder,
                f"packing_{label}",
                base,
                seeds=list(range(trials)),
                gpus_per_trial=gpus,
                cpus_per_trial=1,
                max_concurrent_trials=trials,
            )
            start = time.perf_counter()
            pal.sweep(job, tracking_uri=uri, storage_path=str(folder / "runs"), verbose=0)
            wall = time.perf_counter() - start
            out[label] = {
                "gpus_per_trial": gpus,
                "seconds": wall,
                "trials_per_hour": trials * 3600 / wall,
            }
    out["speedup"] = out["packed"]["trials_per_hour"] / out["one_at_a_time"]["trials_per_hour"]
    return out
