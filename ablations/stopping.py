"""When would a person have stopped labeling, and what would it have cost? Digits, 3 seeds.

    pal ablate ablations/stopping.py && pal report stopping    # 12 trials on CPU cores
    pal ablate ablations/stopping.py --smoke                   # 4 tiny trials

Twelve queries of 5% on the embedded digits preset (``configs/digits.yaml``: 10% labeled at
start, so 70% of the pool at the end), for random, entropy, core-set and PAL. Every round logs
the stopping signals (:mod:`pal.stopping`); ``pal report`` prices the validation plateau per
strategy: the labels a person who stopped at its first firing would have saved, and the test
accuracy they would have left.
"""

from _study import study

STRATEGIES = ("pal", "coreset", "entropy", "random")  # the costliest first


def get_job():
    job = study(
        "stopping",
        "digits",
        {name: {"strategy": name} for name in STRATEGIES},
        base={"rounds": 12},
    )
    job.update(seeds=[0, 1, 2], max_concurrent_trials=2, cpus_per_trial=1, gpus_per_trial=0)
    return job
