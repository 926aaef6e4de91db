"""What the paper-protocol HPO jobs share: the preset as base, the search space, the smoke size.

The search follows the paper's Appendix B (lambda1, lambda2 in {0.5, 1}, widened here:
lambda1 log-uniform in [0.01, 2], since S_C's spread is several times S_S's and a small lambda1
is what lets S_S count; lambda2 in [0, 2], down to no S_D, which takes the most of classes missing
from the labels, see docs/studies.md; learning rates in [1e-4, 1e-1]; SGD or Adam) plus
the number of sub-queries K and how the terms are weighed and the sub-query fine-tune runs:
``score_norm`` (none, zscore, rank), ``finetune_epochs`` (1..20), ``finetune_lr_factor``
(log-uniform 0.03..1), ``finetune_start`` (continue, restart) and ``finetune_scope`` (head, all;
``all`` + ``restart`` is the authors' code).
"""

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def paper_protocol_job(dataset: str, max_subqueries: int = 10) -> dict:
    return {
        "name": f"{dataset}_pal_hpo",
        "base": yaml.safe_load((CONFIGS / f"{dataset}.yaml").read_text()),
        "search_space": {
            "lambda1": ["loguniform", 0.01, 2.0],
            "lambda2": ["uniform", 0.0, 2.0],
            "subqueries": ["randint", 1, max_subqueries],
            "score_norm": ["choice", ["none", "zscore", "rank"]],
            "finetune_epochs": ["randint", 1, 20],
            "finetune_lr_factor": ["loguniform", 0.03, 1.0],
            "finetune_start": ["choice", ["continue", "restart"]],
            "finetune_scope": ["choice", ["head", "all"]],
            "lr_task": ["loguniform", 1e-4, 1e-1],
            "lr_scoring": ["loguniform", 1e-4, 1e-1],
            "optimizer": ["choice", ["sgd", "adam"]],
        },
        "num_samples": 32,
        "max_concurrent_trials": 8,
        "cpus_per_trial": 4,
        "gpus_per_trial": 1,
        "asha": True,
        "seed": 0,
        "smoke": {
            "base": {
                "pool_size": 2000,
                "val_size": 200,
                "rounds": 2,
                "epochs_task": 1,
                "epochs_scoring": 1,
                "task_backbone": "cnn",
                "scoring_backbone": "cnn",
            },
            "num_samples": 2,
            "max_concurrent_trials": 2,
            "cpus_per_trial": 1,
        },
    }
