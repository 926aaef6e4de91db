"""A seed decides everything: two processes, one config and seed, identical numbers.

The processes run at the same time, and one of them draws from the global RNG first, as other
code in a user's process would. ``vgg16_tv`` keeps torchvision's classifier, whose dropout
layers are where a global draw used to leak in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys, torch
import pal
from pal.loop import Experiment

if sys.argv[1] == "disturbed":
    torch.manual_seed(12345)
    torch.rand(1000)
config = pal.make_config(dict(
    dataset="digits", strategy="pal", task_backbone="vgg16_tv", scoring_backbone="cnn",
    pool_size=120, val_size=10, initial_size=16, query_size=6, rounds=1, subqueries=2,
    epochs_task=1, epochs_scoring=1, batch_size=16, seed=0, device="cpu",
))
experiment = Experiment(config)
rounds = []
for record in experiment.rounds():
    weights = sum(float(p.double().abs().sum()) for p in experiment.task_model.parameters())
    rounds.append({
        "test_accuracy": record.test_accuracy,
        "selected": record.selected,
        "query_metrics": {k: repr(v) for k, v in sorted(record.query_metrics.items())},
        "task_weights_l1": weights.hex(),
    })
print(json.dumps(rounds))
"""


@pytest.mark.slow
def test_two_processes_one_seed_identical_numbers():
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for mode in ("plain", "disturbed")
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        outs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    plain, disturbed = outs
    assert len(plain) == 2 and len(plain[1]["selected"]) == 6
    assert plain == disturbed
