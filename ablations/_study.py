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
    """A study on ``configs/<preset>.yaml`` plus ``base``, one trial per variant and seed."""
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
