"""The strategies compared (the paper's Section 4.1, Figure 1) on CIFAR-10, 5 seeds.

    pal ablate ablations/strategies.py            # 30 trials on the paper's protocol (GPUs)
    pal ablate ablations/strategies.py --smoke    # 6 tiny trials on digits

Every strategy trains the same task network; DBAL's carries dropout 0.5 before its classifier,
which its MC-dropout passes sample (no other strategy needs it). VAAL is the slow one: its cost
shows in each round's query_seconds.
"""

from _study import STRATEGIES, strategy_variant, study


def get_job():
    return study(
        "strategies",
        "cifar10",
        {name: strategy_variant(name) for name in STRATEGIES},
    )
