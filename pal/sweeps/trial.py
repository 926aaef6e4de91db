"""A sweep's trial: one whole experiment as one Ray Tune trial, resumable after any round.

Part of :mod:`pal.sweeps`, the only package of ``pal`` that imports Ray Tune (here when a trial
runs, in its worker). A trial runs a whole experiment through the same
:class:`pal.loop.Experiment` as ``pal.run_experiment``; it reports and checkpoints after every
round (the experiment's state, the validation history, the MLflow run id and, in
:data:`STRATEGY_FILE`, what the strategy carries between queries), so a trial that
dies resumes at its last finished round and logs into the same MLflow run
(:class:`pal.tracking.runs.MLflowTracker`). Every trial's MLflow run is tagged with the node it
ran on (``ray.node_id``, ``ray.node``, ``ray.node_ip``).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from pal.config import make_config
from pal.vocabulary import (
    NODE_ID_TAG,
    NODE_IP_TAG,
    NODE_TAG,
    PLACEMENT_TAG,
    RESUMED_AT_ROUND_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    VARIANT_TAG,
)

STRATEGY_FILE = "strategy.pt"
"""The checkpoint's file of the strategy's :meth:`~pal.strategies.Strategy.state_dict` (PAL's
last scoring network with ``epochs_scoring_warm``), written only when it holds something."""


def trainable(params: dict[str, Any]) -> None:
    """One Ray Tune trial: one whole experiment, all rounds, resumable after any round.

    ``params`` holds ``pal.Config`` keys plus ``_sweep`` (tracking URI, parent run id, and an
    optional fault hook used by the tests). Each round reports :meth:`RoundRecord.metrics`
    (the keys MLflow logs) and checkpoints the experiment's state and the MLflow run id.
    """
    import torch
    from ray import tune

    from pal.loop import Experiment
    from pal.tracking.runs import MLflowTracker
    from pal.tracking.sweeps import retire_unfinished_trial_runs

    sweep = params["_sweep"]
    cell = params.get("_cell")  # an ablation study's (variant, seed)
    variant = cell["variant"] if cell else params.get("_variant")
    overrides = dict(sweep["variants"][variant]) if variant is not None else {}
    if cell:
        overrides["seed"] = cell["seed"]
    config = make_config({k: v for k, v in params.items() if not k.startswith("_")}, **overrides)
    threads = max(1, int(sweep.get("cpus_per_trial", 1)))
    torch.set_num_threads(threads)
    experiment = Experiment(config)
    run_id = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = json.loads((Path(folder) / "state.json").read_text())
            strategy_file = Path(folder) / STRATEGY_FILE
            if strategy_file.exists():  # what the strategy carries between queries
                experiment.strategy.load_state_dict(torch.load(strategy_file, weights_only=True))
        experiment.load_state_dict(saved["experiment"])
        run_id = saved["mlflow_run_id"]

    context = tune.get_context()
    if checkpoint is None and sweep["parent_run_id"]:  # a fresh start, or one after a stop
        retire_unfinished_trial_runs(
            sweep["tracking_uri"], sweep["parent_run_id"], context.get_trial_id()
        )
    tags = {
        TRIAL_ID_TAG: context.get_trial_id(),
        NODE_ID_TAG: _node_id(),
        NODE_TAG: socket.gethostname(),
        NODE_IP_TAG: _node_ip(),
        SWEEP_TAG: sweep["name"],
        PLACEMENT_TAG: experiment.placement.describe(),
    }
    if variant is not None:
        tags[VARIANT_TAG] = variant
    if checkpoint is not None:
        tags[RESUMED_AT_ROUND_TAG] = experiment.rounds_done
    tracker = MLflowTracker(
        config,
        tracking_uri=sweep["tracking_uri"],
        experiment_name=sweep["experiment_name"],
        run_id=run_id,
        parent_run_id=sweep["parent_run_id"],
        run_name=f"{variant}-seed{config.seed}"
        if variant is not None
        else context.get_trial_name(),
        tags=tags,
    )
    with tracker:
        for record in experiment.rounds():
            tracker(record, experiment)
            with tempfile.TemporaryDirectory() as folder:
                state = {"experiment": experiment.state_dict(), "mlflow_run_id": tracker.run_id}
                (Path(folder) / "state.json").write_text(json.dumps(state))
                strategy_state = experiment.strategy.state_dict()
                if strategy_state:
                    torch.save(strategy_state, Path(folder) / STRATEGY_FILE)
                checkpoint = tune.Checkpoint.from_directory(folder)
                tune.report(record.metrics(), checkpoint=checkpoint)
            _fault_hook(sweep.get("fault"), record.round)


def _fault_hook(spec: dict | None, round_: int) -> None:
    """Test hook, once per sweep (a marker file), after ``spec['round']`` is logged and saved:
    ``action`` ``raise`` fails the trial; ``hang`` writes the node id into the marker and
    sleeps, so that a test can take the node away in the middle of the trial."""
    if not spec or round_ != spec["round"]:
        return
    try:
        fd = os.open(spec["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    if spec.get("action", "raise") == "raise":
        os.close(fd)
        raise RuntimeError(f"injected fault after round {round_}")
    import time

    import ray

    os.write(fd, f"{ray.get_runtime_context().get_node_id()} {os.getpid()}\n".encode())
    os.close(fd)
    time.sleep(float(spec.get("seconds", 600)))


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a tag, never worth failing a trial over
        return "unknown"


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a tag, never worth failing a trial over
        return "unknown"
