"""The strategies under 20% label noise (the paper's Section 4.2, Figure 2) on CIFAR-10.

    pal ablate ablations/label_noise.py           # 60 trials on the paper's protocol (GPUs)
    pal ablate ablations/label_noise.py --smoke   # 12 tiny trials on digits

The oracle flips each label it gives (initial pool, queries, validation) to a different class
with probability label_noise; the test set stays clean.
"""

from _study import STRATEGIES, strategy_variant, study


def get_job():
    return study(
        "label_noise",
        "cifar10",
        {
            f"{name}@noise{noise}": {**strategy_variant(name), "label_noise": noise}
            for noise in (0.0, 0.2)
            for name in STRATEGIES
        },
    )
