"""What every ablation study shares: the paper preset as base, 5 seeds, and a smoke size.

A study is a grid of named variants (config overrides) x seeds, every other value fixed; each
(variant, seed) is one Ray Tune trial and one MLflow run (tag ``pal.variant``) nested under the
study's run in the MLflow experiment ``pal-ablations``.
"""

from pathlib import Path

import yaml

from pal.strategies import STRATEGIES as REGISTERED

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# every registered classification strategy (the registry's names, sorted)
STRATEGIES = tuple(name for name in REGISTERED if "classification" in REGISTERED.get(name).tasks)

# DBAL samples the task network's dropout (Gal et al. 2017 train theirs with it); no other
# strategy needs it, so only DBAL's task network carries it
DBAL_DROPOUT = 0.5


def strategy_variant(name: str) -> dict:
    """The config overrides that run strategy ``name`` in a study: ``dbal`` with its dropout."""
    return {"strategy": name, **({"dropout": DBAL_DROPOUT} if name == "dbal" else {})}


# seconds per trial on 2 CPU cores: the embedded digits, a 300-image pool, two short rounds
SMOKE_BASE = {
    "dataset": "digits",
    "download": False,
    "pool_size": 300,
    "val_size": 30,
    "initial_size": 30,
    "query_size": 15,
    "rounds": 2,
    "epochs_task": 2,
    "epochs_scoring": 2,
    "vaal_epochs": 2,
    "task_backbone": "cnn",
    "scoring_backbone": "cnn",
    "subqueries": 3,
}


def study(name: str, preset: str, variants: dict, base: dict | None = None, smoke=None) -> dict:
    """A study on ``configs/<preset>.yaml`` plus ``base``, one trial per variant and seed (GPU
    trials; :func:`cpu_study` for one that runs on this kind of machine)."""
    return {
        "name": name,
        "experiment_name": "pal-ablations",
        "base": {**yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text()), **(base or {})},
        "variants": variants,
        "seeds": [0, 1, 2, 3, 4],
        "num_samples": 1,
        "max_concurrent_trials": 8,
        "cpus_per_trial": 4,
        "gpus_per_trial": 1,
        "smoke": {
            "base": {**SMOKE_BASE, **(smoke or {})},
            "seeds": [0],
            "max_concurrent_trials": 2,
            "cpus_per_trial": 1,
        },
    }


def cpu_study(name: str, variants: dict, base: dict | None = None, seeds=(0, 1, 2)) -> dict:
    """A study on the MNIST preset (``configs/mnist.yaml``, ``../shared/data/mnist.npz``) sized
    for CPUs: one core per trial, two at a time, ``seeds`` seeds."""
    job = study(name, "mnist", variants, base)
    job.update(seeds=list(seeds), max_concurrent_trials=2, cpus_per_trial=1, gpus_per_trial=0)
    return job
