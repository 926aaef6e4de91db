"""Quickstart sweep: PAL on the embedded digits, Optuna over PAL's hyperparameters (the weights
lambda1 (log scale), lambda2, K, ``score_norm``, the sub-query fine-tune's epochs, learning-rate
factor, start and scope) and the learning rates and optimizer.

    pal sweep tune_jobs/quickstart.py            # 8 trials, 2 at a time, 2 CPU cores
    pal sweep tune_jobs/quickstart.py --smoke    # 2 tiny trials: what the tests run
    mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db

Local Ray (or the cluster in RAY_ADDRESS), MLflow in mlflow/mlflow.db, the Optuna study beside it in
mlflow/optuna.db, Tune's state under runs/.
"""


def get_job():
    return {
        "name": "quickstart",
        "base": {
            "dataset": "digits",
            "strategy": "pal",
            "task_backbone": "cnn",
            "scoring_backbone": "cnn",
            "initial_fraction": 0.1,
            "query_fraction": 0.05,
            "rounds": 4,
            "val_size": 100,
            "epochs_task": 30,
            "epochs_scoring": 30,
            "batch_size": 32,
            "seed": 0,
        },
        "search_space": {
            "lambda1": ["loguniform", 0.01, 2.0],
            "lambda2": ["uniform", 0.0, 2.0],
            "subqueries": ["randint", 1, 6],
            "score_norm": ["choice", ["none", "zscore", "rank"]],
            "finetune_epochs": ["randint", 1, 20],
            "finetune_lr_factor": ["loguniform", 0.03, 1.0],
            "finetune_start": ["choice", ["continue", "restart"]],
            "finetune_scope": ["choice", ["head", "all"]],
            "lr_task": ["loguniform", 1e-3, 1e-1],
            "lr_scoring": ["loguniform", 1e-3, 1e-1],
            "optimizer": ["choice", ["sgd", "adam"]],
        },
        "num_samples": 8,
        "max_concurrent_trials": 2,
        "cpus_per_trial": 1,
        "gpus_per_trial": 1,
        "asha": False,
        "seed": 0,
        "smoke": {
            "base": {"rounds": 2, "epochs_task": 2, "epochs_scoring": 2, "pool_size": 400},
            "num_samples": 2,
        },
    }
