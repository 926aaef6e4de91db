"""PAL's hyperparameters on CIFAR-10, the paper's protocol (Section 4, Appendix B).

    pal sweep tune_jobs/cifar10_pal_hpo.py             # 32 trials, 1 GPU each
    pal sweep tune_jobs/cifar10_pal_hpo.py --resume    # continue an interrupted sweep
    pal sweep tune_jobs/cifar10_pal_hpo.py --smoke     # 2 tiny trials on 2,000 images

10% initial pool, 5% per query to 40%, VGG-16 task network, ResNet-18 scoring network, 100 epochs:
hours per trial on one GPU; ASHA stops the weakest trials after two rounds. Searched as in the
paper's Appendix B: lambda1, lambda2 in [0.5, 1] widened to [0, 2], learning rates in
[1e-4, 1e-1], SGD or Adam, plus the number of sub-queries K.
"""


def get_job():
    return {
        "name": "cifar10_pal_hpo",
        "base": {
            "dataset": "cifar10",
            "data_dir": "data",
            "download": True,
            "strategy": "pal",
            "task_backbone": "vgg16",
            "scoring_backbone": "resnet18",
            "initial_fraction": 0.1,
            "query_fraction": 0.05,
            "rounds": 6,
            "val_size": 5000,
            "epochs_task": 100,
            "epochs_scoring": 100,
            "batch_size": 64,
            "seed": 0,
        },
        "search_space": {
            "lambda1": ["uniform", 0.0, 2.0],
            "lambda2": ["uniform", 0.0, 2.0],
            "subqueries": ["randint", 1, 10],
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
